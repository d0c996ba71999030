#!/usr/bin/env bash
# The part-B ablation job (jobs/hybrid-ablation.sh --size small, one seed) on 2 MPI ranks: every variant
# and baseline trains from the same base on the same tokens, and the table (held-out loss and perplexity
# on positions >= P, final alphas, throughput and FLOPs relative to the static fine-tune) is printed and
# written as Markdown and JSON with a finite number in every measured cell; report.md holds the
# comparisons with the baselines (seed-paired differences) and their reading.
cd "$(dirname "$0")/.."
. tests/lib.sh hybrid-ablation
bash jobs/hybrid-ablation.sh --size small --out "$TMP/ab" >"$TMP/job.log" 2>&1 && ok "jobs/hybrid-ablation.sh --size small ran" \
  || bad "hybrid-ablation: $(tail -5 "$TMP/job.log")"
cat "$TMP/ab/table.md" 2>/dev/null
/usr/bin/python3 - "$TMP/ab/table.json" <<'PY' && ok "table.json: every variant (one seed, no interval) with a finite held-out loss, perplexity, FLOPs per step and FLOPs ratio" \
  || bad "table.json"
import json, math, sys
t = json.load(open(sys.argv[1]))
rows = t['rows'] if isinstance(t, dict) else t
names = [r['variant'] for r in rows]
for want in ('static', 'alpha-0.1', 'alpha-0.5', 'alpha-0.9', 'learned', 'W_r', 'W_kv', 'mean_prefix', 'attn_prefix',
             'direct', 'shuffled', 'static-restricted', 'ln_out_prefix'):
    assert want in names, want
for r in rows[1:]:
    assert r['seeds'] == 1 and r['val_loss_ci'] is None and r['flops_vs_ref'] > 0 and r['flops_per_step'] > 0, r
for r in rows:
    assert math.isfinite(r['val_loss']) and abs(math.exp(r['val_loss']) - r['val_ppl']) < 1e-3 * r['val_ppl'], r
PY
/usr/bin/python3 - "$TMP/ab" <<'PY' && ok "report.md: each baseline comparison is the seed-paired difference of table.json's losses, with its reading" \
  || bad "report.md"
import json, re, sys
out = sys.argv[1]
rows = {r['variant']: r for r in json.load(open(f'{out}/table.json'))['rows']}
text = open(f'{out}/report.md').read()
for var, base in (('learned', 'static'), ('learned', 'static-restricted'), ('learned', 'direct'),
                  ('learned', 'shuffled'), ('ln_out_prefix', 'learned')):
    m = re.search(rf'\| {re.escape(var)} - {re.escape(base)} \| ([+-][0-9.]+) \| no interval \(one seed\) \|', text)
    assert m, (var, base)
    want = rows[var]['val_loss'] - rows[base]['val_loss']
    assert abs(float(m.group(1)) - want) < 1e-4, (var, base, m.group(1), want)
assert text.count('**Reading.**') == 1 and 'static fine-tune' in text
PY
finish
