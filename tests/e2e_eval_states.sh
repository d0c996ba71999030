#!/usr/bin/env bash
# `dreamstate eval-states` end to end: a tiny RWKV-7 (150 steps), labelled
# contexts with a held-out split, train / held-out states of the first 128 tokens, a small state DiT
# on layer 1, states tuned per label on the same train contexts (run.task state_tuning, 20 steps), then
# eval-states --tuned on 1 and on 2 MPI ranks:
#  - the JSON has every field; 1 and 2 ranks give the same numbers (the epsilon-MSE to 1e-9, the rest
#    exactly); the pooled and per-label CEs are the token-weighted means of the per-context ones;
#  - (1) the held-out epsilon-MSE equals the trainer's val_eps_mse_t* (same seed, same noise);
#  - (2) the held-out kNN accuracies and nearest-train distances equal a numpy recomputation from the
#    shards (normalisation, cosine 1-NN / 5-NN vote); the Fréchet floor (train subset vs held-out, pooled
#    and per label, in the 32-component PCA of the train states) equals numpy's PCA and covariances with
#    scipy.linalg.sqrtm to 1e-4;
#  - (3) one context's zero-state CE and full-true-state CE equal `dreamstate eval` on the raw tokens
#    (the continuation alone, and prompt + continuation minus prompt); prompting (the full true state)
#    gives a lower pooled CE than the zero state; the tuned row's and the zero row's pooled CE equal
#    the tuning run's held-out losses (the same windows: 128 tokens after the first 128);
#  - bad input (missing file, weights or states of another RWKV-7, another label list, a checkpoint
#    that is not a state DiT, a bad flag value) exits 2 with one line and writes nothing.
cd "$(dirname "$0")/.."
. tests/lib.sh eval-states
PY=/usr/bin/python3

# ---- the pipeline: RWKV-7, contexts, states, state DiT ----
$BIN train configs/tiny.yaml --set train.steps=150 --set train.eval_every=0 --set checkpoint.every=150 \
  --set run.threads=1 --set run.out_dir="$TMP/lm" >/dev/null 2>"$TMP/lm.log" || bad "tiny RWKV-7: $(tail -2 "$TMP/lm.log")"
CKPT=$(ls "$TMP"/lm/checkpoints/*.ckpt 2>/dev/null | tail -1)
$BIN build-contexts --out "$TMP/train.jsonl" --held-out "$TMP/held.jsonl" --sources c-headers,python,licenses \
  --max-per-label 40 --min-bytes 384 --max-bytes 512 >"$TMP/build.log" 2>&1 || bad "build-contexts: $(tail -2 "$TMP/build.log")"
EXTRACT=(extract-states configs/tiny.yaml --checkpoint "$CKPT" --set run.threads=1 --max-tokens 128)
$BIN "${EXTRACT[@]}" --contexts "$TMP/train.jsonl" --out "$TMP/st" >/dev/null 2>"$TMP/st.log" \
  || bad "extract train: $(tail -2 "$TMP/st.log")"
$BIN "${EXTRACT[@]}" --contexts "$TMP/held.jsonl" --out "$TMP/sh" --labels-from "$TMP/st/index.txt" >/dev/null \
  2>"$TMP/sh.log" || bad "extract held-out: $(tail -2 "$TMP/sh.log")"
$BIN train configs/tiny-states.yaml --set run.threads=1 --set run.out_dir="$TMP/dit" \
  --set diffusion.states="$TMP/st/index.txt" --set diffusion.states_valid="$TMP/sh/index.txt" --set diffusion.layers=1 \
  --set dit.hidden=64 --set dit.depth=2 --set dit.heads=4 --set train.steps=150 --set train.batch_size=8 \
  --set train.eval_every=0 --set checkpoint.every=150 --set optim.warmup_steps=10 --set diffusion.ema=0.99 \
  >/dev/null 2>"$TMP/dit.log" || bad "state DiT: $(tail -2 "$TMP/dit.log")"
MODEL=$(ls "$TMP"/dit/checkpoints/*.ckpt 2>/dev/null | tail -1)
$BIN train configs/tiny-state-tuning.yaml --set run.threads=1 --set run.out_dir="$TMP/tune" --set state_tuning.init="$CKPT" \
  --set state_tuning.contexts="$TMP/train.jsonl" --set state_tuning.contexts_valid="$TMP/held.jsonl" \
  --set train.steps=20 --set train.batch_size=8 --set train.eval_every=0 --set train.eval_batches=100 \
  >/dev/null 2>"$TMP/tune.log" || bad "state tuning: $(tail -2 "$TMP/tune.log")"
[ -n "$CKPT" ] && [ -n "$MODEL" ] && ok "pipeline: $(basename "$CKPT"), $(wc -l <"$TMP/train.jsonl") + $(wc -l <"$TMP/held.jsonl") contexts, DiT $(basename "$MODEL")" \
  || { bad "pipeline"; finish; exit 1; }

# ---- eval-states on 1 and 2 ranks ----
EVAL=(eval-states "$MODEL" --states "$TMP/st/index.txt" --held-out "$TMP/sh/index.txt" --samples-per-label 4 --steps 10
      --threads 1 --tuned "$TMP/tune/states/index.txt")
$BIN "${EVAL[@]}" --out "$TMP/e1.json" >"$TMP/e1.txt" 2>"$TMP/e1.log" && ok "1 rank: $(tail -1 "$TMP/e1.log")" \
  || bad "1 rank: $(tail -2 "$TMP/e1.log")"
mpirun --oversubscribe -np 2 $BIN "${EVAL[@]}" --out "$TMP/e2.json" >"$TMP/e2.txt" 2>"$TMP/e2.log" \
  && ok "2 ranks: $(tail -1 "$TMP/e2.log")" || bad "2 ranks: $(tail -2 "$TMP/e2.log")"
cat "$TMP/e1.txt"
grep -q "eval-states generation: .*ETA" "$TMP/e1.log" && grep -q "eval-states continuation: .*ETA" "$TMP/e1.log" \
  && ok "progress lines for generation and continuation" || bad "no progress lines"

$PY - "$TMP" <<'PY' && ok "JSON fields; 1 vs 2 ranks; reductions; (1) = trainer's val_eps_mse; (2) held-out kNN = numpy, Fréchet floor = numpy/scipy; tuned = tuning's val_loss" \
  || bad "JSON / numbers"
import json, struct, sys
import numpy as np
tmp = sys.argv[1]
e1, e2 = json.load(open(f'{tmp}/e1.json')), json.load(open(f'{tmp}/e2.json'))
inits = ['zero', 'class_mean', 'generated', 'generated_wrong_label', 'true_modelled', 'true_full', 'tuned']
def need(d, path):
    for k in path.split('.'):
        assert k in d, f'missing {path}'
        d = d[k]
    return d
for p in ['version', 'model', 'signature', 'rwkv_model', 'rwkv_weights', 'tokenizer', 'train.records', 'held_out.records',
          'held_out.max_tokens', 'held_out.contexts', 'labels', 'ranks', 'seed', 'sampler.steps', 'sampler.guidance',
          'sampler.samples_per_label', 'denoising.t', 'denoising.held_out.eps_mse', 'denoising.held_out.mean',
          'denoising.train.eps_mse', 'denoising.train.mean', 'knn.k', 'knn.held_out.accuracy',
          'knn.held_out.nearest_train_distance', 'knn.generated.accuracy', 'knn.generated.n', 'knn.per_label',
          'knn.memorisation.generated_nearest_train_distance', 'knn.memorisation.held_out_nearest_train_distance',
          'knn.memorisation.ratio', 'continuation.pooled', 'continuation.per_label', 'continuation.per_context',
          'continuation.skipped', 'seconds.total', 'tuned_states', 'frechet.components', 'frechet.layers',
          'frechet.train_subset', 'seconds.frechet']:
    need(e1, p)
assert e1['continuation']['initial_states'] == inits, e1['continuation']['initial_states']
K, N = len(e1['labels']), e1['sampler']['samples_per_label']
assert e1['denoising']['t'] == [49, 249, 499, 749, 949] and len(e1['denoising']['held_out']['eps_mse']) == 5
assert e1['knn']['generated']['n'] == K * N and len(e1['knn']['per_label']) == K
c = e1['continuation']
for g in [c['pooled']] + [p['ce'] for p in c['per_label']]:
    for s in inits:
        assert all(k in g[s] for k in ('ce', 'delta_vs_zero', 'ci95')), s
        lo, hi = g[s]['ci95']
        assert lo <= hi, (s, lo, hi)
    assert g['zero']['delta_vs_zero'] == 0 and g['zero']['ci95'] == [0, 0]

# 1 vs 2 ranks: everything equal but timing and the rank count; the epsilon-MSE sums to rounding
def flat(d, pre=''):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from flat(v, f'{pre}.{k}')
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from flat(v, f'{pre}[{i}]')
    else:
        yield pre, d
f1, f2 = dict(flat(e1)), dict(flat(e2))
assert f1.keys() == f2.keys()
for k in f1:
    if k.startswith('.seconds') or k in ('.ranks',): continue
    a, b = f1[k], f2[k]
    if k.startswith('.denoising') and isinstance(a, float):
        assert abs(a - b) <= 1e-9 * max(1, abs(a)), (k, a, b)
    else:
        assert a == b, (k, a, b)
assert e1['ranks'] == 1 and e2['ranks'] == 2

# pooled / per-label CE = token-weighted means of the per-context CEs
pc = c['per_context']
assert len(pc) == c['pooled']['contexts'] == e1['held_out']['records'] - c['skipped']
for lab, g in [(None, c['pooled'])] + [(i, p['ce']) for i, p in enumerate(c['per_label'])]:
    rows = [p for p in pc if lab is None or p['label'] == lab]
    tok = sum(p['tokens'] for p in rows)
    assert tok == g['tokens']
    for s, name in enumerate(inits):
        ce = sum(p['ce'][s] * p['tokens'] for p in rows) / tok
        assert abs(ce - g[name]['ce']) < 1e-12, (lab, name, ce, g[name]['ce'])
assert c['pooled']['true_full']['ce'] < c['pooled']['zero']['ce'], 'prompting does not help'
# the tuning run scored the same windows of the same held-out contexts from its states and the zero state
tune = json.loads(open(f'{tmp}/tune/train.jsonl').read().splitlines()[-1])
assert c['skipped'] == 0
for row, key in (('tuned', 'val_loss'), ('zero', 'zero_state_val_loss')):
    assert abs(c['pooled'][row]['ce'] - tune[key]) < 2e-6, (row, c['pooled'][row]['ce'], key, tune[key])
assert c['pooled']['tuned']['ce'] < c['pooled']['zero']['ce'], 'the tuned states do not help'
# the paired bootstrap CI against numpy's own (20000 resamples, another RNG): within 15% of its width
rng = np.random.default_rng(0)
tok = np.array([p['tokens'] for p in pc], dtype=float)
sums = np.array([p['ce'] for p in pc]) * tok[:, None]
draws = rng.integers(0, len(pc), size=(20000, len(pc)))
for s, name in enumerate(inits[1:], 1):
    d = (sums[draws, s] - sums[draws, 0]).sum(axis=1) / tok[draws].sum(axis=1)
    lo, hi = np.percentile(d, [2.5, 97.5])
    got = c['pooled'][name]['ci95']
    assert abs(got[0] - lo) <= 0.15 * (hi - lo) and abs(got[1] - hi) <= 0.15 * (hi - lo), (name, got, lo, hi)

# (1) the trainer's last evaluation used the same seed (1234), noise and held-out records
last = json.loads(open(f'{tmp}/dit/train.jsonl').read().splitlines()[-1])
for t, v in zip(e1['denoising']['t'], e1['denoising']['held_out']['eps_mse']):
    assert abs(v - last[f'val_eps_mse_t{t}']) < 2e-6, (t, v, last[f'val_eps_mse_t{t}'])

# (2) held-out kNN from the shards: layer-1 WKV normalised per head over the train records (float64)
def read(d):
    idx = open(f'{d}/index.txt').read().splitlines()
    recs = []
    for line in idx:
        if not line.startswith('shard '): continue
        raw = open(f'{d}/{line.split()[1]}', 'rb').read()
        _, _, L, C, H, Nh, cond_dim, _, _, n, rb = struct.unpack_from('<8s8IQQ', raw, 0)
        for i in range(n):
            rec = raw[64 + i * rb: 64 + (i + 1) * rb]
            label = struct.unpack_from('<i', rec, 0)[0]
            st = np.frombuffer(rec, dtype='<f4', offset=8 + 4 * cond_dim).reshape(L, 2 * C + H * Nh * Nh)
            recs.append((label, st[1, C:C + H * Nh * Nh].reshape(H, Nh * Nh).astype(np.float64)))
    return np.array([r[0] for r in recs]), np.stack([r[1] for r in recs])
ytr, Wtr = read(f'{tmp}/st')
yte, Wte = read(f'{tmp}/sh')
mu, sd = Wtr.mean(axis=(0, 2)), Wtr.std(axis=(0, 2))
Xtr = ((Wtr - mu[None, :, None]) / sd[None, :, None]).reshape(len(ytr), -1)
Xte = ((Wte - mu[None, :, None]) / sd[None, :, None]).reshape(len(yte), -1)
cos = 1 - (Xte @ Xtr.T) / np.outer(np.linalg.norm(Xte, axis=1), np.linalg.norm(Xtr, axis=1))
order = np.argsort(cos, axis=1, kind='stable')
acc1 = np.mean(ytr[order[:, 0]] == yte)
votes5 = [np.bincount(ytr[o[:5]], minlength=K).argmax() for o in order]
acc5 = np.mean(np.array(votes5) == yte)
kn = e1['knn']['held_out']
assert abs(kn['accuracy'][0] - acc1) < 1e-12 and abs(kn['accuracy'][1] - acc5) < 1e-12, (kn['accuracy'], acc1, acc5)
assert abs(kn['nearest_train_distance'] - cos.min(axis=1).mean()) < 1e-5, (kn['nearest_train_distance'], cos.min(axis=1).mean())

# (2) the Fréchet floor: PCA of the train features (numpy SVD), the train subset rows i n / m, Gaussians
# with numpy.cov, the matrix square root by scipy.linalg.sqrtm; pooled and per label
import warnings
from scipy import linalg
fr = e1['frechet']
Kf = fr['components']
mean = Xtr.mean(0)
vt = np.linalg.svd(Xtr - mean, full_matrices=False)[2][:Kf]
Ptr, Pte = (Xtr - mean) @ vt.T, (Xte - mean) @ vt.T
def fd(a, b):
    S1, S2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        root = linalg.sqrtm(S1 @ S2).real
    return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(S1 + S2 - 2 * root)
n, m = len(ytr), fr['train_subset']
assert Kf == min(32, n - 1) and m == min(K * N, n) and len(fr['layers']) == 1 and fr['layers'][0]['layer'] == 1, fr
lay = fr['layers'][0]
ref = fd(Ptr[[i * n // m for i in range(m)]], Pte)
assert abs(lay['train_floor'] - ref) < 1e-4 * ref, (lay['train_floor'], ref)
for k, pl in enumerate(lay['per_label']):
    rows = np.flatnonzero(ytr == k)
    mk = min(len(rows), N)
    ref_k = fd(Ptr[rows[[j * len(rows) // mk for j in range(mk)]]], Pte[yte == k])
    assert pl['train_subset'] == mk and abs(pl['train_floor'] - ref_k) < 1e-4 * ref_k, (k, pl, ref_k)
    assert pl['generated'] > 0 and np.isfinite(pl['generated']), pl
assert lay['generated'] > 0 and abs(lay['ratio'] - lay['generated'] / lay['train_floor']) < 1e-12, lay
print(f'  Fréchet ({Kf} components): generated {lay["generated"]:.4g}, floor {lay["train_floor"]:.6g} (numpy/scipy {ref:.6g})')
print(f'  eps-MSE held-out {e1["denoising"]["held_out"]["mean"]:.5f}, kNN held-out {acc1:.3f}/{acc5:.3f}, '
      f'CE zero {c["pooled"]["zero"]["ce"]:.4f} full {c["pooled"]["true_full"]["ce"]:.4f} tuned {c["pooled"]["tuned"]["ce"]:.4f}')
PY

# (3) one context recomputed with `dreamstate eval` on plain token shards (byte tokenizer: id = byte)
$PY - "$TMP" <<'PY' || bad "writing the recomputation texts"
import json, sys
tmp = sys.argv[1]
e = json.load(open(f'{tmp}/e1.json'))
p = e['continuation']['per_context'][0]
P, n = e['held_out']['max_tokens'], p['tokens'] + 1        # n continuation tokens, n - 1 targets
text = open(f'{tmp}/held.jsonl').read().splitlines()[p['context']]
b = json.loads(text)['text'].encode('utf-8')
for name, data in (('cont', b[P:P + n]), ('both', b[:P + n]), ('prompt', b[:P + 1])):
    open(f'{tmp}/{name}.txt', 'wb').write(data)
open(f'{tmp}/recompute.txt', 'w').write(f'{P} {n} {p["ce"][0]!r} {p["ce"][5]!r}\n')
PY
read -r P NC CE_ZERO CE_FULL <"$TMP/recompute.txt"
loss_of() {  # loss_of NAME T: dreamstate eval's mean CE over the first T targets of NAME.txt
  $BIN prepare-data --valid-fraction 0 --out "$TMP/d-$1" "$TMP/$1.txt" >/dev/null 2>&1
  $BIN eval configs/tiny.yaml --checkpoint "$CKPT" --set data.train="$TMP/d-$1/train.bin" --set train.ctx_len="$2" \
    --set train.batch_size=1 --set train.eval_batches=1 --set run.threads=1 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["loss"])'
}
L_CONT=$(loss_of cont $((NC - 1))); L_BOTH=$(loss_of both $((P + NC - 1))); L_PROMPT=$(loss_of prompt "$P")
$PY - "$L_CONT" "$CE_ZERO" <<'PY' && ok "zero-state CE of context 0 = dreamstate eval of its continuation ($CE_ZERO vs $L_CONT)" \
  || bad "zero-state CE $CE_ZERO vs dreamstate eval $L_CONT"
import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) < 2e-6 else 1)
PY
$PY - "$L_BOTH" "$L_PROMPT" "$P" "$NC" "$CE_FULL" <<'PY' && ok "full-true-state CE of context 0 = eval(prompt + continuation) - eval(prompt) ($CE_FULL)" \
  || bad "full-true-state CE $CE_FULL vs prompting recomputation"
import sys
both, prompt, P, n, full = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
ref = (both * (P + n - 1) - prompt * P) / (n - 1)   # targets P+1 .. P+n-1 of prompt + continuation
print(f'  recomputed {ref:.6f}, eval-states {full:.6f}')
sys.exit(0 if abs(ref - full) < 2e-5 else 1)
PY

# ---- bad input ----
$BIN train configs/tiny.yaml --set model.n_layer=1 --set train.steps=1 --set train.eval_every=0 --set run.threads=1 \
  --set run.out_dir="$TMP/lm1" >/dev/null 2>&1
CKPT1=$(ls "$TMP"/lm1/checkpoints/*.ckpt 2>/dev/null | tail -1)
grep '"label": *"license"' "$TMP/held.jsonl" | head -3 >"$TMP/one.jsonl"
$BIN "${EXTRACT[@]}" --contexts "$TMP/one.jsonl" --out "$TMP/one" >/dev/null 2>&1
$BIN extract-states configs/tiny.yaml --set model.n_layer=1 --checkpoint "$CKPT1" --set run.threads=1 --max-tokens 128 \
  --contexts "$TMP/held.jsonl" --labels-from "$TMP/st/index.txt" --out "$TMP/other" >/dev/null 2>&1
BAD=(--states "$TMP/st/index.txt" --held-out "$TMP/sh/index.txt" --samples-per-label 1 --steps 2 --threads 1 --out "$TMP/bad.json")
expect_bad_input "missing model file" "no-such.ckpt" $BIN eval-states "$TMP/no-such.ckpt" "${BAD[@]}"
expect_bad_input "missing held-out index" "nope/index.txt" $BIN eval-states "$MODEL" "${BAD[@]}" --held-out "$TMP/nope/index.txt"
expect_bad_input "weights of another RWKV-7" "checkpoint is for 'rwkv7 L=1" $BIN eval-states "$MODEL" "${BAD[@]}" --checkpoint "$CKPT1"
expect_bad_input "states of another RWKV-7" "other/index.txt: states of 'rwkv7 L=1 C=128" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --held-out "$TMP/other/index.txt"
expect_bad_input "tuned states of another RWKV-7" "other/index.txt: tuned states of 'rwkv7 L=1 C=128" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --tuned "$TMP/other/index.txt"
expect_bad_input "tuned states missing a label" "one/index.txt: no tuned state of label 'c-header'" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --tuned "$TMP/one/index.txt"
expect_bad_input "held-out set with another label list" "1 labels, the model has 3" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --held-out "$TMP/one/index.txt"
expect_bad_input "an RWKV-7 checkpoint as the model" "a checkpoint of task 'lm', not state_diffusion" $BIN eval-states "$CKPT" "${BAD[@]}"
expect_bad_input "--fd-components above train records - 1" "--fd-components 96 is out of range: at most 95" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --fd-components 96
expect_bad_input "continuation shorter than 16" "continuation-tokens 8 must be in" \
  $BIN eval-states "$MODEL" "${BAD[@]}" --continuation-tokens 8
expect_bad_input "missing --held-out" "needs MODEL.ckpt, --states and --held-out" \
  $BIN eval-states "$MODEL" --states "$TMP/st/index.txt"
[ ! -e "$TMP/bad.json" ] && ok "refused runs wrote no JSON" || bad "a refused run wrote $TMP/bad.json"

finish
