#!/usr/bin/env bash
# DREAMSTATE part A, the state DiT end to end: tiny RWKV-7 -> labelled contexts -> states ->
# `train` with run.task state_diffusion, then the commands that use the model:
#  - 1 rank and 2 ranks (train.micro_batch fixed, fp64 reduce) log the same loss at every step, in fp32
#    and in train.precision bf16;
#  - a run resumed from an earlier checkpoint ends byte-identical to an uninterrupted one;
#  - sample-state writes state files that generate --state accepts; the same seed gives the same file;
#  - interpolate-state in state space: lambda = 0 and 1 give back the endpoints' modelled WKV states;
#  - edit-state (DDIM inversion under the own label, decoding under the same label) stays close to
#    the input state (the round trip of A2, src/eval/README.md §2, reported);
#  - RWKV-PEFT state files (--format rwkv-state or a .safetensors name): sample-state writes the WKV of
#    the dreamstate file of the same seed with label= in the metadata, --n numbers X-<b>.safetensors;
#    interpolate-state mixes formats; edit-state and generate read them;
#  - bad input: unknown label, non-numeric guidance, a state file of another model, an lm checkpoint
#    given as a state model, no diffusion.states: exit 2, one line, nothing written.
cd "$(dirname "$0")/.."
. tests/lib.sh state-diffusion

$BIN train configs/tiny.yaml --set train.steps=60 --set train.eval_every=0 --set run.threads=1 \
  --set run.out_dir="$TMP/lm" >/dev/null 2>"$TMP/lm.log" || bad "tiny RWKV-7: $(tail -2 "$TMP/lm.log")"
LM=$(ls "$TMP"/lm/checkpoints/*.ckpt | tail -1)
$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources c-headers,licenses,python \
  --max-per-label 16 --max-bytes 256 >/dev/null 2>&1 || bad "build-contexts"
for part in train held; do
  extra=(); [ $part = held ] && extra=(--labels-from "$TMP/st-train/index.txt")
  $BIN extract-states configs/tiny.yaml --checkpoint "$LM" --contexts "$TMP/$part.jsonl" --out "$TMP/st-$part" \
    --max-tokens 128 --set run.threads=1 "${extra[@]}" >/dev/null 2>"$TMP/x.log" || bad "extract $part: $(tail -1 "$TMP/x.log")"
done

SD=(configs/tiny-states.yaml --set run.threads=1 --set diffusion.states="$TMP/st-train/index.txt"
    --set diffusion.states_valid="$TMP/st-held/index.txt" --set diffusion.layers=all --set dit.hidden=64 --set dit.depth=1 --set dit.heads=2
    --set train.batch_size=8 --set train.micro_batch=2 --set train.steps=12 --set train.eval_every=6
    --set train.eval_batches=1 --set checkpoint.every=4 --set optim.warmup_steps=2)
losses() { grep -o '"loss":[0-9.e+-]*\|"val_loss":[0-9.e+-]*' "$1/train.jsonl" | tr '\n' ' '; }
# 1 and 2 ranks of SD plus the given settings, into $TMP/<tag>1 and $TMP/<tag>2; passes if both log the
# same losses at every step
ranks_agree() {  # tag, what it is, --set arguments...
  local tag=$1 what=$2 n; shift 2
  for n in 1 2; do
    mpirun --oversubscribe -np $n $BIN train "${SD[@]}" "$@" --set run.out_dir="$TMP/$tag$n" >/dev/null 2>"$TMP/$tag$n.log" \
      || { bad "state DiT, $what, $n rank(s): $(tail -2 "$TMP/$tag$n.log")"; return 1; }
  done
  [ -n "$(losses "$TMP/${tag}1")" ] && [ "$(losses "$TMP/${tag}1")" = "$(losses "$TMP/${tag}2")" ] \
    || { bad "$what: 1 vs 2 ranks differ: $(losses "$TMP/${tag}1") vs $(losses "$TMP/${tag}2")"; return 1; }
}
ranks_agree r fp32 && ok "fp32, 1 vs 2 ranks: every step's loss and the held-out loss identical ($(losses "$TMP/r1" | cut -c1-60)...)"
ranks_agree b bf16 --set train.precision=bf16 && { [ "$(losses "$TMP/b1")" != "$(losses "$TMP/r1")" ] \
  && ok "bf16, 1 vs 2 ranks: every step's loss and the held-out loss identical, and not fp32's ($(losses "$TMP/b1" | cut -c1-60)...)" \
  || bad "bf16 logs fp32's losses"; }
ranks_agree s "shuffled conditions" --set diffusion.shuffle_condition=true --set diffusion.p_uncond=0 && \
  ranks_agree u "true conditions, no dropout" --set diffusion.p_uncond=0 && { \
  [ "$(losses "$TMP/s1")" != "$(losses "$TMP/u1")" ] && grep -q 'control: shuffled conditions' "$TMP/s1.log" \
  && ok "diffusion.shuffle_condition: 1 vs 2 ranks identical, and not the true conditions' losses" \
  || bad "diffusion.shuffle_condition trains on the true conditions"; }
grep -q '"val_eps_mse_t49"' "$TMP/r1/train.jsonl" && grep -q '"train_eps_mse"' "$TMP/r1/train.jsonl" \
  && ok "held-out eps-MSE per eval step and the train-set eps-MSE are logged" || bad "eval fields missing"

# a run that lost its checkpoints after step 4 resumes there and ends byte-identical
$BIN train "${SD[@]}" --set run.out_dir="$TMP/r3" --set checkpoint.keep=3 >/dev/null 2>&1
rm -f "$TMP"/r3/checkpoints/step-00000008.ckpt "$TMP"/r3/checkpoints/step-00000012.ckpt
$BIN train "${SD[@]}" --set run.out_dir="$TMP/r3" --set checkpoint.keep=3 >/dev/null 2>"$TMP/r3.log"
grep -q 'resumed from .*step-00000004.ckpt' "$TMP/r3.log" \
  && cmp -s "$TMP/r1/checkpoints/step-00000012.ckpt" "$TMP/r3/checkpoints/step-00000012.ckpt" \
  && ok "resumed from step 4: final checkpoint byte-identical to the uninterrupted run" \
  || bad "resumed run differs: $(tail -1 "$TMP/r3.log")"

MODEL="$TMP/r1/checkpoints/step-00000012.ckpt"
$BIN sample-state "$MODEL" --label python --out "$TMP/a.state" --seed 5 --steps 20 2>/dev/null \
  && $BIN sample-state "$MODEL" --label python --out "$TMP/b.state" --seed 5 --steps 20 2>/dev/null \
  && cmp -s "$TMP/a.state" "$TMP/b.state" && ok "sample-state: the same seed writes the same state file" \
  || bad "sample-state not reproducible"
$BIN sample-state "$MODEL" --label license --out "$TMP/l.state" --n 2 --guidance 2 --sampler ddpm --steps 20 2>/dev/null \
  && [ -s "$TMP/l.state-0" ] && [ -s "$TMP/l.state-1" ] && ok "sample-state --n 2 (DDPM, guidance 2)" || bad "sample-state --n 2"
out=$($BIN generate configs/tiny.yaml --checkpoint "$LM" --state "$TMP/a.state" --prompt "#include" --max-tokens 20 \
  --set run.threads=1 2>/dev/null) && [ -n "$out" ] && ok "generate --state <sampled state> runs" || bad "generate from a sampled state"

# interpolation in state space: the endpoints are the inputs' modelled WKV parts
$BIN generate configs/tiny.yaml --checkpoint "$LM" --prompt "int main(void) {" --max-tokens 0 --state-out "$TMP/p.state" \
  --set run.threads=1 2>/dev/null
$BIN interpolate-state "$MODEL" --from "$TMP/p.state" --to "$TMP/l.state-0" --out "$TMP/i" --space state --mode linear \
  --points 3 2>/dev/null || bad "interpolate-state"
$BIN edit-state "$MODEL" --state "$TMP/l.state-0" --to-label license --out "$TMP/e.state" --steps 50 2>/dev/null \
  || bad "edit-state"
/usr/bin/python3 - "$TMP" <<'PY' && ok "interpolation endpoints; edit round trip reported above" || bad "state file checks"
import struct, sys
import numpy as np
tmp = sys.argv[1]
def state(path):
    raw = open(path, 'rb').read()
    _, _, L, C, H, N, cond_dim, _, _, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
    s = np.frombuffer(raw, dtype='<f4', offset=64 + 8 + 4 * cond_dim, count=L * (2 * C + H * N * N))
    return s.reshape(L, -1)[:, C:C + H * N * N]   # the WKV parts (both layers are modelled)
p, l = state(f'{tmp}/p.state'), state(f'{tmp}/l.state-0')
i0, i1, i2 = (state(f'{tmp}/i-{k}') for k in range(3))
assert np.allclose(i0, p, rtol=1e-4, atol=1e-4 * np.abs(p).max()), 'lambda 0'
assert np.allclose(i2, l, rtol=1e-4, atol=1e-4 * np.abs(l).max()), 'lambda 1'
assert np.allclose(i1, (p + l) / 2, atol=1e-4 * np.abs(p).max()), 'lambda 0.5'
e = state(f'{tmp}/e.state')
print(f'  edit-state (invert + regenerate, same label, DDIM-50): relative L2 error {np.linalg.norm(e - l) / np.linalg.norm(l):.4f}')
PY

# RWKV-PEFT state files (--format rwkv-state, or an .safetensors name) out of and into every command
$BIN sample-state "$MODEL" --label python --out "$TMP/a.safetensors" --seed 5 --steps 20 2>/dev/null \
  && $BIN sample-state "$MODEL" --label license --out "$TMP/n.safetensors" --n 2 --steps 20 --format rwkv-state 2>/dev/null \
  && [ -s "$TMP/n-0.safetensors" ] && [ -s "$TMP/n-1.safetensors" ] \
  && $BIN interpolate-state "$MODEL" --from "$TMP/p.state" --to "$TMP/a.safetensors" --out "$TMP/j.safetensors" \
       --space state --mode linear --points 3 2>/dev/null \
  && $BIN edit-state "$MODEL" --state "$TMP/a.safetensors" --to-label python --out "$TMP/e2" --format rwkv-state \
       --steps 50 2>/dev/null \
  && $BIN generate configs/tiny.yaml --checkpoint "$LM" --state "$TMP/e2" --prompt "#include" --max-tokens 5 \
       --set run.threads=1 >/dev/null 2>&1 \
  && ok "sample-state (--n 2: n-0.safetensors, n-1.safetensors), interpolate-state, edit-state, generate on rwkv-state files" \
  || bad "rwkv-state files through sample-state, interpolate-state, edit-state, generate"
/usr/bin/python3 - "$TMP" <<'PY' && ok "rwkv-state files: the WKV of the dreamstate file of the same seed, label= kept; endpoints" \
  || bad "rwkv-state file contents"
import json, struct, sys
import numpy as np
tmp = sys.argv[1]
def dreamstate(path):
    raw = open(path, 'rb').read()
    _, _, L, C, H, N, cond_dim, _, _, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
    s = np.frombuffer(raw, dtype='<f4', offset=64 + 8 + 4 * cond_dim, count=L * (2 * C + H * N * N))
    return s.reshape(L, -1)[:, C:C + H * N * N]
def rwkv(path):
    raw = open(path, 'rb').read()
    n = struct.unpack_from('<Q', raw)[0]
    head = json.loads(raw[8:8 + n])
    meta = head.pop('__metadata__')
    layers = [head[f'blocks.{l}.att.time_state'] for l in range(len(head))]
    assert all(e['dtype'] == 'F32' and e['shape'][1:] == [64, 64] for e in layers)
    return np.stack([np.frombuffer(raw[8 + n + e['data_offsets'][0]:8 + n + e['data_offsets'][1]], '<f4')
                     for e in layers]), meta
a, meta = rwkv(f'{tmp}/a.safetensors')
assert np.array_equal(a, dreamstate(f'{tmp}/a.state')), 'sample-state: same seed, same WKV'
assert meta['format'] == 'rwkv-state' and meta['label'] == 'python' and meta['model'].startswith('rwkv7 L=2'), meta
p = dreamstate(f'{tmp}/p.state')
j0, j2 = rwkv(f'{tmp}/j-0.safetensors')[0], rwkv(f'{tmp}/j-2.safetensors')[0]
assert np.allclose(j0, p, atol=1e-4 * np.abs(p).max()) and np.allclose(j2, a, atol=1e-4 * np.abs(a).max()), 'endpoints'
assert rwkv(f'{tmp}/e2')[1]['label'] == 'python' and rwkv(f'{tmp}/n-1.safetensors')[1]['label'] == 'license'
PY
expect_bad_input "--format contradicting the extension" "sample-state: --format: format dreamstate contradicts" \
  $BIN sample-state "$MODEL" --label python --out "$TMP/x5.safetensors" --format dreamstate

# bad input
expect_bad_input "unknown label" "unknown label 'pythn' (known: c-header, license, python)" \
  $BIN sample-state "$MODEL" --label pythn --out "$TMP/x1.state"
expect_bad_input "guidance not a number" "sample-state: --guidance 'abc' is not a number" \
  $BIN sample-state "$MODEL" --label python --out "$TMP/x2.state" --guidance abc
$BIN train configs/tiny.yaml --set model.n_layer=3 --set train.steps=1 --set train.eval_every=0 --set run.threads=1 \
  --set run.out_dir="$TMP/lm3" >/dev/null 2>&1  # a model of another shape
expect_bad_input "state file of another model" "state has L=2 C=128, model has L=3 C=128" \
  $BIN generate configs/tiny.yaml --checkpoint "$TMP/lm3/checkpoints/step-00000001.ckpt" --state "$TMP/a.state" \
  --set model.n_layer=3
expect_bad_input "an lm checkpoint as state model" "a checkpoint of task 'lm', not state_diffusion" \
  $BIN sample-state "$LM" --label python --out "$TMP/x3.state"
expect_bad_input "no diffusion.states" "diffusion.states: run.task state_diffusion needs a state dataset" \
  $BIN train configs/tiny-states.yaml --set run.out_dir="$TMP/x4"
[ ! -e "$TMP/x1.state" ] && [ ! -e "$TMP/x2.state" ] && [ ! -e "$TMP/x3.state" ] && [ ! -e "$TMP/x4" ] \
  && [ ! -e "$TMP/x5.safetensors" ] \
  && ok "refused commands wrote nothing" || bad "refused commands left files"

finish
