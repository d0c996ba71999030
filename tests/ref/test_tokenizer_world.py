"""World tokenizer: the independent Python encoder of world_tokenizer_ref.py against the C encoder,
run as `build/tests/test_data --encode-world VOCAB FILE OUT` (ids as little-endian int32).
Text: the Jargon File, some multilingual UTF-8 and invalid bytes, and every token's own bytes."""
import gzip
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from world_tokenizer_ref import VOCAB, build_trie, encode, load_vocab  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JARGON = "/usr/share/doc/jargon-text/jargon.txt.gz"
C_ENCODER = os.path.join(ROOT, "build", "tests", "test_data")


def main():
    tokens = load_vocab(VOCAB)
    text = "Hello, world! 你好，世界。 😀🚀 Grüße Привет こんにちは\n\t".encode("utf-8") + bytes(range(256))
    if os.path.exists(JARGON):
        with gzip.open(JARGON, "rb") as f:
            text += f.read()[:400_000]
    text += b"\n".join(sorted(tokens, key=tokens.get))
    expected = encode(build_trie(tokens), text)

    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "text.bin"), os.path.join(tmp, "ids.bin")
        with open(src, "wb") as f:
            f.write(text)
        run = subprocess.run([C_ENCODER, "--encode-world", VOCAB, src, out])
        if run.returncode != 0:
            print(f"FAIL: {C_ENCODER} --encode-world exited with {run.returncode}")
            print("0 passed, 1 failed")
            return 1
        with open(out, "rb") as f:
            raw = f.read()
    got = list(struct.unpack(f"<{len(raw) // 4}i", raw))

    ok = got == expected
    if not ok:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        print(f"FAIL: C gives {len(got)} ids, Python {len(expected)}; first difference at id {first}: "
              f"C {got[first:first + 5]} vs Python {expected[first:first + 5]}")
    else:
        print(f"C and Python agree on {len(expected)} ids for {len(text)} bytes ({len(tokens)} vocab entries)")
    print(f"{int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
