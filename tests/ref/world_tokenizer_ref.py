"""An independent World tokenizer (src/rwkv7/README.md §7): the vocabulary's literals read with
ast.literal_eval, a trie of dicts, greedy longest match over bytes. Nothing here is derived from the
C code; tests/ref/test_tokenizer_world.py and tests/ref/test_binidx.py compare the C encoder with it."""
import ast
import os

VOCAB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "src", "data", "rwkv_vocab_v20230424.txt")


def load_vocab(path=VOCAB):
    """{token bytes: id} of a vocabulary file of lines "<id> <python literal> <byte length>"."""
    tokens = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            first, last = line.index(" "), line.rindex(" ")
            value = ast.literal_eval(line[first + 1:last])
            data = value.encode("utf-8") if isinstance(value, str) else value
            assert len(data) == int(line[last + 1:]), line
            tokens[data] = int(line[:first])
    return tokens


def build_trie(tokens):
    root = {}
    for data, token_id in tokens.items():
        node = root
        for byte in data:
            node = node.setdefault(byte, {})
        node[None] = token_id  # key None: the token ending here
    return root


def encode(trie, data):
    """The ids of the bytes `data`, longest match first."""
    ids, pos = [], 0
    while pos < len(data):
        node, best, best_len = trie, None, 0
        for i in range(pos, len(data)):
            node = node.get(data[i])
            if node is None:
                break
            if None in node:
                best, best_len = node[None], i - pos + 1
        ids.append(best)
        pos += best_len
    return ids
