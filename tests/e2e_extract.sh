#!/usr/bin/env bash
# DREAMSTATE part A data end to end: a tiny checkpoint (5 training steps), labelled contexts
# from the pinned Debian text (build-contexts), extract-states on 1 and on 2 MPI ranks:
#  - the index lists 1 vs 2 shards, their record counts sum to the number of contexts;
#  - every context's record (label, condition, state) is byte-identical between 1 and 2 ranks, read
#    with an independent numpy reader of the documented shard format; rank r holds contexts r, r+2, ...;
#  - --format rwkv-state (2 ranks) writes the same dataset and each record's WKV state as an RWKV-PEFT
#    state file rwkv-states/<context>-<label>.safetensors (checked with an independent reader);
#  - a held-out set extracted with --labels-from keeps the train label ids;
#  - bad input (unknown label, checkpoint of another shape, corrupted shard) exits 2 with one line.
cd "$(dirname "$0")/.."
. tests/lib.sh extract

$BIN train configs/tiny.yaml --set train.steps=5 --set train.eval_every=0 --set run.threads=1 \
  --set run.out_dir="$TMP/run" >/dev/null 2>"$TMP/train.log" || { bad "tiny training: $(tail -2 "$TMP/train.log")"; }
CKPT=$(ls "$TMP"/run/checkpoints/*.ckpt 2>/dev/null | tail -1)
[ -n "$CKPT" ] && ok "tiny checkpoint $(basename "$CKPT")" || bad "no checkpoint"

$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources fortunes,c-headers,licenses \
  --max-per-label 10 --max-bytes 256 >"$TMP/build.log" 2>&1 && ok "build-contexts: $(grep total "$TMP/build.log" | xargs)" \
  || bad "build-contexts: $(tail -2 "$TMP/build.log")"
N=$(wc -l <"$TMP/train.jsonl")

EXTRACT=(extract-states configs/tiny.yaml --checkpoint "$CKPT" --set run.threads=1 --max-tokens 200)
$BIN "${EXTRACT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/s1" >"$TMP/s1.json" 2>"$TMP/s1.log" \
  && ok "1 rank: $(cat "$TMP/s1.json")" || bad "1 rank: $(tail -2 "$TMP/s1.log")"
mpirun --oversubscribe -np 2 $BIN "${EXTRACT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/s2" >"$TMP/s2.json" 2>"$TMP/s2.log" \
  && ok "2 ranks: $(cat "$TMP/s2.json")" || bad "2 ranks: $(tail -2 "$TMP/s2.log")"

for n in 1 2; do
  idx="$TMP/s$n/index.txt"
  shards=$(awk '$1=="shards"{print $2}' "$idx" 2>/dev/null)
  sum=$(awk '$1=="shard"{s+=$3} END{print s+0}' "$idx" 2>/dev/null)
  [ "$shards" = "$n" ] && [ "$(grep -c '^shard ' "$idx")" = "$n" ] && ok "$n rank(s): index lists $n shard(s)" \
    || bad "$n rank(s): index lists '$shards' shards"
  [ "$sum" = "$N" ] && grep -q "^records $N\$" "$idx" && ok "$n rank(s): shard records sum to $N contexts" \
    || bad "$n rank(s): records sum $sum, contexts $N"
done

/usr/bin/python3 - "$TMP" <<'PY' && ok "1 vs 2 ranks: every context's record byte-identical; rank r holds contexts r, r+2, ..." \
  || bad "records differ between 1 and 2 ranks"
import struct, sys, zlib, os
import numpy as np
tmp = sys.argv[1]
def read_dataset(d):
    lines = open(f'{d}/index.txt').read().splitlines()
    shards = [l.split() for l in lines if l.startswith('shard ')]
    labels = [l.split(' ', 1)[1] for l in lines if l.startswith('label ')]
    recs = {}
    for rank, (_, name, count) in enumerate(shards):
        raw = open(f'{d}/{name}', 'rb').read()
        magic, ver, L, C, H, N, cond_dim, flags, meta_bytes, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
        assert magic == b'DSSTATES' and ver == 1 and N == 64 and C == H * N and n == int(count), 'header'
        assert rb == 8 + 4 * (cond_dim + L * (2 * C + H * N * N)), 'record size'
        assert len(raw) == 64 + n * rb + meta_bytes, 'file size'
        for i in range(n):
            rec = raw[64 + i * rb: 64 + (i + 1) * rb]
            label, ctx = struct.unpack_from('<ii', rec, 0)
            state = np.frombuffer(rec, dtype='<f4', offset=8 + 4 * cond_dim)
            assert np.isfinite(state).all() and np.abs(state).max() > 0, 'state values'
            assert len(shards) == 1 or ctx % len(shards) == rank, f'context {ctx} in shard {rank}'
            recs[ctx] = (labels[label], rec)
    return recs
one, two = read_dataset(f'{tmp}/s1'), read_dataset(f'{tmp}/s2')
n = sum(1 for _ in open(f'{tmp}/train.jsonl'))
assert sorted(one) == sorted(two) == list(range(n)), 'every context once'
import json
ctx_labels = [json.loads(l)['label'] for l in open(f'{tmp}/train.jsonl')]
assert all(one[i][0] == ctx_labels[i] for i in range(n)), 'labels follow the contexts'
diff = [i for i in range(n) if one[i] != two[i]]
print(f'  {n} contexts, {len(diff)} differing records')
sys.exit(1 if diff else 0)
PY

# --format rwkv-state: the same dataset, plus each record as an RWKV-PEFT state file (2 ranks)
mpirun --oversubscribe -np 2 $BIN "${EXTRACT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/s3" --format rwkv-state \
  >/dev/null 2>"$TMP/s3.log" || bad "--format rwkv-state: $(tail -2 "$TMP/s3.log")"
cmp -s "$TMP/s2/index.txt" "$TMP/s3/index.txt" && cmp -s "$TMP/s2/states-r00000-of-00002.bin" "$TMP/s3/states-r00000-of-00002.bin" \
  && cmp -s "$TMP/s2/states-r00001-of-00002.bin" "$TMP/s3/states-r00001-of-00002.bin" \
  && ok "--format rwkv-state: the dataset is the same bytes" || bad "--format rwkv-state changed the dataset"
/usr/bin/python3 - "$TMP" <<'PY' && ok "--format rwkv-state: rwkv-states/<context>-<label>.safetensors = each record's WKV state" \
  || bad "rwkv-states/ files"
import json, os, struct, sys
import numpy as np
tmp = sys.argv[1]
ctx_labels = [json.loads(l)['label'] for l in open(f'{tmp}/train.jsonl')]
names = sorted(os.listdir(f'{tmp}/s3/rwkv-states'))
want = sorted(f"{i}-{lab.replace('/', '_')}.safetensors" for i, lab in enumerate(ctx_labels))
assert names == want, f'file names {names[:3]} vs {want[:3]}'
raw = open(f'{tmp}/s1/states-r00000-of-00001.bin', 'rb').read()
_, _, L, C, H, N, cond_dim, _, _, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
for k in range(n):
    label, ctx = struct.unpack_from('<ii', raw, 64 + k * rb)
    state = np.frombuffer(raw, '<f4', L * (2 * C + H * N * N), 64 + k * rb + 8 + 4 * cond_dim).reshape(L, -1)
    f = open(f"{tmp}/s3/rwkv-states/{ctx}-{ctx_labels[ctx].replace('/', '_')}.safetensors", 'rb').read()
    hl = struct.unpack_from('<Q', f)[0]
    head = json.loads(f[8:8 + hl])
    meta = head.pop('__metadata__')
    assert meta['format'] == 'rwkv-state' and meta['label'] == ctx_labels[ctx] and meta['context'] == str(ctx), meta
    assert sorted(head) == [f'blocks.{l}.att.time_state' for l in range(L)], sorted(head)
    for l in range(L):
        e = head[f'blocks.{l}.att.time_state']
        assert e['dtype'] == 'F32' and e['shape'] == [H, N, N], e
        b, end = e['data_offsets']
        got = np.frombuffer(f[8 + hl + b:8 + hl + end], '<f4')
        assert np.array_equal(got, state[l, C:C + H * N * N]), f'context {ctx} layer {l}'
print(f'  {n} files, WKV states bit-identical to the dataset records')
PY

# held-out set with the train set's label ids
$BIN "${EXTRACT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/h1" --labels-from "$TMP/s1/index.txt" >/dev/null 2>"$TMP/h1.log" \
  && diff <(grep '^label ' "$TMP/s1/index.txt") <(grep '^label ' "$TMP/h1/index.txt") >/dev/null \
  && ok "held-out extraction with --labels-from: the same label list" || bad "held-out extraction: $(tail -2 "$TMP/h1.log")"

# bad input
{ head -1 "$TMP/held.jsonl"; echo '{"label":"no-such-label","text":"hello"}'; } >"$TMP/unknown.jsonl"
expect_bad_input "unknown label" "unknown.jsonl:2: unknown label 'no-such-label' (known: c-header, " \
  $BIN "${EXTRACT[@]}" --contexts "$TMP/unknown.jsonl" --out "$TMP/u" --labels-from "$TMP/s1/index.txt"
expect_bad_input "checkpoint of another shape" "$(basename "$CKPT")" \
  $BIN "${EXTRACT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/w" --set model.n_layer=3
cp -r "$TMP/s2" "$TMP/bad"
printf '\x55' | dd of="$TMP/bad/states-r00001-of-00002.bin" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_bad_input "corrupted shard" "states-r00001-of-00002.bin: payload checksum mismatch" \
  $BIN "${EXTRACT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/c" --labels-from "$TMP/bad/index.txt"
expect_bad_input "missing --contexts" "extract-states: missing --contexts" \
  $BIN extract-states configs/tiny.yaml --checkpoint "$CKPT" --out "$TMP/m"
[ ! -e "$TMP/u" ] && [ ! -e "$TMP/c" ] && ok "refused runs left no output" || bad "refused runs left output"

finish
