#!/usr/bin/env bash
# Bring your own model: random RWKV-7 weights in the official layout (a bf16 .pth as released, layer 0
# without v0/v1/v2; tests/ref/official_weights.py, a small shape) run through the part-A job with
# --model FILE: converted once, World tokenizer, every dimension read from the file (no --set for the
# shape anywhere); every stage runs and eval-states reports finite numbers. Then the same file starts
# a run through `import` and trains two steps with no model keys, and a file whose shape contradicts a
# given model key is refused in one line, nothing written.
cd "$(dirname "$0")/.."
. tests/lib.sh byo-model
PTH="$TMP/RWKV-x070-World-tiny-random.pth"
/usr/bin/python3 tests/ref/official_weights.py "$PTH" --shape tiny --seed 3 && ok "random official-layout weights" \
  || bad "official_weights.py"

OUT="$TMP/pa"
bash jobs/part-a.sh --size smoke --model "$PTH" --out "$OUT" >"$TMP/job.log" 2>&1 \
  && ok "jobs/part-a.sh --size smoke --model FILE.pth ran every stage" || bad "jobs/part-a.sh --model: $(tail -5 "$TMP/job.log")"
grep -q '^wrote .*model.safetensors: L=2 C=128 V=65536' "$TMP/job.log" && ok "the .pth was converted once" \
  || bad "no conversion line in the job log"
grep -q '^model rwkv7 L=2 C=128 V=65536 Dw=32 Da=32 Dv=32 Dg=64$' "$OUT/states-train/index.txt" \
  && ok "states carry the file's shape (LoRA ranks from the tensors)" || bad "index: $(grep '^model' "$OUT/states-train/index.txt")"
/usr/bin/python3 - "$OUT" <<'PY' && ok "eval-states.json: finite numbers for every condition" || bad "eval-states.json"
import json, math, sys
e = json.load(open(f'{sys.argv[1]}/eval-states.json'))
cont = e['continuation']['pooled']
for key in ('zero', 'class_mean', 'generated', 'true_full', 'tuned'):
    assert math.isfinite(cont[key]['ce']), key
print(f"  continuation CE (random weights): zero {cont['zero']['ce']:.3f}, generated {cont['generated']['ce']:.3f}")
PY

ST="$OUT/model.safetensors"
$BIN prepare-data --tokenizer world --valid-fraction 0 --out "$TMP/data" README.md src/rwkv7/README.md >/dev/null
RUN=(configs/from-weights.yaml --set run.out_dir="$TMP/run" --set run.threads=1 --set train.ctx_len=32
     --set train.batch_size=2 --set train.eval_every=0 --set train.eval_batches=1
     --set data.train="$TMP/data/train.bin")
$BIN import "${RUN[@]}" --safetensors "$ST" >"$TMP/import.log" 2>&1 && ok "import with no model keys" \
  || bad "import: $(tail -2 "$TMP/import.log")"
$BIN train "${RUN[@]}" --set train.steps=2 >"$TMP/train.log" 2>&1 && grep -q '"step":2' "$TMP/run/train.jsonl" \
  && ok "train resumes the imported weights with the file's shape" || bad "train: $(tail -3 "$TMP/train.log")"
expect_bad_input "a contradicting model key" "model.n_layer is 3 but $ST has n_layer 2" \
  $BIN eval "${RUN[@]}" --set model.n_layer=3 --checkpoint "$ST"
finish
