#!/usr/bin/env bash
# `generate` end to end (DREAMSTATE part A, "using states") on a tiny checkpoint (30 training steps):
#  - state tuning equals prompting: the state file of prompt P (--state-out) continued with prompt Q
#    prints exactly what prompt P+Q prints (byte tokenizer: tokens concatenate), greedy and sampled;
#    also for the state saved after generated text; and the state changes what Q alone would print;
#  - --gain G equals a state file whose WKV part was multiplied by G independently (numpy);
#  - the same seed reproduces the text, another seed changes it;
#  - bad input (state of another shape, bad numbers, missing files, ...) exits 2 with one line.
cd "$(dirname "$0")/.."
. tests/lib.sh generate
# same WHAT FILE_A FILE_B: identical and non-empty output
same() {
  if [ -s "$2" ] && cmp -s "$2" "$3"; then ok "$1 ($(wc -c <"$2") bytes)"; else bad "$1: '$(head -c 60 "$2")' vs '$(head -c 60 "$3")'"; fi
}

TRAIN=(train configs/tiny.yaml --set train.eval_every=0 --set run.threads=1)
$BIN "${TRAIN[@]}" --set train.steps=30 --set run.out_dir="$TMP/run" >/dev/null 2>"$TMP/train.log" \
  || bad "tiny training: $(tail -2 "$TMP/train.log")"
CKPT=$(ls "$TMP"/run/checkpoints/*.ckpt 2>/dev/null | tail -1)
[ -n "$CKPT" ] && ok "tiny checkpoint $(basename "$CKPT")" || bad "no checkpoint"
GEN=(generate configs/tiny.yaml --checkpoint "$CKPT" --set run.threads=1)
gen() { "$BIN" "${GEN[@]}" "$@" 2>>"$TMP/gen.log"; }

# 1. state tuning equals prompting
P="The quick brown "; Q="fox jumps over the"
gen --prompt "$P" --max-tokens 0 --state-out "$TMP/p.bin" >"$TMP/empty" \
  && [ ! -s "$TMP/empty" ] && grep -qa "prompt_tokens=${#P}" "$TMP/p.bin" \
  && ok "--max-tokens 0 --state-out: prints nothing, state file with prompt_tokens=${#P}" || bad "state of a prompt"
gen --state "$TMP/p.bin" --prompt "$Q" --temperature 0 --max-tokens 40 >"$TMP/greedy.state"
gen --prompt "$P$Q" --temperature 0 --max-tokens 40 >"$TMP/greedy.prompt"
same "greedy: state(P) + Q prints what P+Q prints" "$TMP/greedy.state" "$TMP/greedy.prompt"
differs=0
for seed in 1 2 3; do
  gen --state "$TMP/p.bin" --prompt "$Q" --temperature 1 --top-p 1 --seed $seed --max-tokens 60 >"$TMP/s$seed.state"
  gen --prompt "$P$Q" --temperature 1 --top-p 1 --seed $seed --max-tokens 60 >"$TMP/s$seed.prompt"
  gen --prompt "$Q" --temperature 1 --top-p 1 --seed $seed --max-tokens 60 >"$TMP/s$seed.zero"
  same "sampled, seed $seed: state(P) + Q prints what P+Q prints" "$TMP/s$seed.state" "$TMP/s$seed.prompt"
  cmp -s "$TMP/s$seed.state" "$TMP/s$seed.zero" || differs=$((differs+1))
done
[ $differs -gt 0 ] && ok "the state matters: Q from the zero state prints otherwise ($differs of 3 seeds)" \
  || bad "Q alone prints the same as state(P) + Q for every seed"

# the state after generated text: prompt P, 25 greedy tokens X; then state + Q == prompt P X Q
gen --prompt "$P" --temperature 0 --max-tokens 25 --state-out "$TMP/px.bin" >"$TMP/x"
X=$(cat "$TMP/x"; echo .); X=${X%.}
grep -qa "generated_tokens=${#X}" "$TMP/px.bin" && ok "state after generation: generated_tokens=${#X}" \
  || bad "state after generation: metadata"
gen --state "$TMP/px.bin" --prompt "$Q" --temperature 1 --top-p 0.9 --seed 5 --max-tokens 40 >"$TMP/gx.state"
gen --prompt "$P$X$Q" --temperature 1 --top-p 0.9 --seed 5 --max-tokens 40 >"$TMP/gx.prompt"
same "state(P + generated X) + Q prints what P+X+Q prints" "$TMP/gx.state" "$TMP/gx.prompt"

# 2. --gain: scale the WKV part of the state file independently (numpy, CRC-32C recomputed)
/usr/bin/python3 - "$TMP/p.bin" "$TMP/p2.bin" <<'PY' || bad "numpy rewrite of the state file"
import struct, sys
import numpy as np
TABLE = []
for i in range(256):
    c = i
    for _ in range(8): c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    TABLE.append(c)
def crc32c(data):
    c = 0xFFFFFFFF
    for b in data: c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
raw = bytearray(open(sys.argv[1], 'rb').read())
magic, ver, L, C, H, N, cond_dim, flags, meta_bytes, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
assert magic == b'DSSTATES' and n == 1 and cond_dim == 0
state = np.frombuffer(raw, dtype='<f4', offset=64 + 8, count=L * (2 * C + H * N * N)).copy().reshape(L, -1)
state[:, C:C + H * N * N] *= 2
raw[72:72 + state.nbytes] = state.tobytes()
struct.pack_into('<I', raw, 56, crc32c(raw[64:]))
struct.pack_into('<I', raw, 60, crc32c(raw[:60]))
open(sys.argv[2], 'wb').write(raw)
PY
gen --state "$TMP/p.bin" --gain 2 --prompt "$Q" --temperature 1 --top-p 1 --seed 9 --max-tokens 60 >"$TMP/gain.cli"
gen --state "$TMP/p2.bin" --prompt "$Q" --temperature 1 --top-p 1 --seed 9 --max-tokens 60 >"$TMP/gain.numpy"
same "--gain 2 prints what a state file with 2 x WKV prints" "$TMP/gain.cli" "$TMP/gain.numpy"
gen --state "$TMP/p.bin" --prompt "$Q" --temperature 1 --top-p 1 --seed 9 --max-tokens 60 >"$TMP/gain1"
cmp -s "$TMP/gain.cli" "$TMP/gain1" && bad "--gain 2 prints what gain 1 prints" || ok "--gain 2 changes the text"

# 3. seeds
gen --prompt "$P" --seed 11 --max-tokens 60 >"$TMP/seed11a"
gen --prompt "$P" --seed 11 --max-tokens 60 >"$TMP/seed11b"
gen --prompt "$P" --seed 12 --max-tokens 60 >"$TMP/seed12"
same "the same seed prints the same text" "$TMP/seed11a" "$TMP/seed11b"
cmp -s "$TMP/seed11a" "$TMP/seed12" && bad "seeds 11 and 12 print the same text" || ok "another seed prints other text"
gen --prompt "$P" --max-tokens 0 >"$TMP/none" && [ ! -s "$TMP/none" ] && ok "--max-tokens 0 prints nothing" \
  || bad "--max-tokens 0 printed something"

# 4. bad input
$BIN "${TRAIN[@]}" --set train.steps=2 --set model.n_layer=3 --set run.out_dir="$TMP/run3" >/dev/null 2>"$TMP/train3.log" \
  || bad "3-layer training: $(tail -2 "$TMP/train3.log")"
$BIN generate configs/tiny.yaml --checkpoint "$(ls "$TMP"/run3/checkpoints/*.ckpt | tail -1)" --set model.n_layer=3 \
  --set run.threads=1 --max-tokens 0 --state-out "$TMP/l3.bin" 2>>"$TMP/gen.log" && ok "state of a 3-layer model" \
  || bad "state of a 3-layer model"
expect_bad_input "state of another shape" "l3.bin: state has L=3 C=128, model has L=2 C=128" \
  $BIN "${GEN[@]}" --state "$TMP/l3.bin" --state-out "$TMP/refused.bin"
expect_bad_input "non-numeric temperature" "generate: --temperature 'abc' is not a number" $BIN "${GEN[@]}" --temperature abc
expect_bad_input "negative temperature" "generate: --temperature -1 must be finite and >= 0" $BIN "${GEN[@]}" --temperature -1
expect_bad_input "top-p 0" "generate: --top-p 0 must be in (0, 1]" $BIN "${GEN[@]}" --top-p 0
expect_bad_input "top-p above 1" "generate: --top-p 1.5 must be in (0, 1]" $BIN "${GEN[@]}" --top-p 1.5
expect_bad_input "fractional max-tokens" "generate: --max-tokens '2.5' is not an integer" $BIN "${GEN[@]}" --max-tokens 2.5
expect_bad_input "negative seed" "generate: --seed '-3'" $BIN "${GEN[@]}" --seed -3
expect_bad_input "missing state file" "no-such.bin: cannot open" $BIN "${GEN[@]}" --state "$TMP/no-such.bin"
expect_bad_input "not a state file" "$(basename "$CKPT"): " $BIN "${GEN[@]}" --state "$CKPT"
expect_bad_input "empty prompt" "generate: the prompt has no tokens" $BIN "${GEN[@]}" --prompt ""
expect_bad_input "unknown option" "generate: unknown option '--top-k'" $BIN "${GEN[@]}" --top-k 5
expect_bad_input "missing --checkpoint" "generate: missing --checkpoint" $BIN generate configs/tiny.yaml
expect_bad_input "--gain without --state" "generate: --gain scales the WKV part of --state" $BIN "${GEN[@]}" --gain 2
expect_bad_input "missing checkpoint file" "no-such.ckpt" $BIN generate configs/tiny.yaml --checkpoint "$TMP/no-such.ckpt"
[ ! -e "$TMP/refused.bin" ] && ok "a refused run wrote no state file" || bad "a refused run wrote a state file"
$BIN generate --help | grep -q "usage: dreamstate generate CONFIG --checkpoint FILE" && ok "--help" || bad "--help"

finish
