#!/usr/bin/python3
"""src/tools/hybrid_table.py on made-up runs (OUT/NAME/seed-S/train.jsonl) against scipy: per variant
the mean held-out L_LM over 3 seeds with the 95% t interval (scipy.stats.t), the difference to the
reference paired by seed with its interval, mean alphas, GFLOP per step and FLOPs per token relative
to the reference; with one
seed no interval ("1 seed, no CI"); large degrees of freedom through the expansion; a missing seed and
runs from different bases exit 2 with one line."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testlib import ROOT, check, finish  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, 'src', 'tools'))
import hybrid_table  # noqa: E402

TOOL = os.path.join(ROOT, 'src', 'tools', 'hybrid_table.py')


def write_run(out, name, seed, val_loss, alpha=None, flops=100.0, base=2.5, tokens_per_step=64e6):
    d = os.path.join(out, name, f'seed-{seed}')
    os.makedirs(d, exist_ok=True)
    last = {'step': 10, 'loss': 2.0, 'tokens_per_s': 1000.0 + seed, 'val_loss': val_loss, 'base_val_loss': base,
            'train_flops_per_token': flops,
            'train_flops_per_step': flops * tokens_per_step, **{f'alpha_0_{m}': a for m, a in (alpha or {}).items()}}
    with open(os.path.join(d, 'train.jsonl'), 'w') as f:
        f.write(json.dumps({'step': 5, 'loss': 2.1, 'tokens_per_s': 900.0}) + '\n' + json.dumps(last) + '\n')


def table(out, seeds, *variants):
    r = subprocess.run([sys.executable, TOOL, out, '--seeds', seeds, *variants], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def main():
    for df in (1, 2, 5, 30, 31, 60, 200):
        check(abs(hybrid_table.t975(df) - scipy.stats.t.ppf(0.975, df)) < 2e-4,
              f't quantile df={df}: {hybrid_table.t975(df):.5f} vs scipy {scipy.stats.t.ppf(0.975, df):.5f}')
    with tempfile.TemporaryDirectory() as out:
        seeds = [1, 2, 3]
        static = [2.10, 2.14, 2.09]
        hyb = [2.12, 2.13, 2.15]
        for s, a, b in zip(seeds, static, hyb):
            write_run(out, 'static', s, a)
            write_run(out, 'hyb', s, b, alpha={'r': 0.8 + s / 100, 'k': 0.9}, flops=150.0)
        rc, md, err = table(out, '1,2,3', 'static=the reference', 'hyb=a hybrid')
        rows = {r['variant']: r for r in json.load(open(os.path.join(out, 'table.json')))['rows']}
        h = rows.get('hyb', {})
        want = scipy.stats.t.interval(0.95, 2, loc=np.mean(hyb), scale=scipy.stats.sem(hyb))
        diff = np.subtract(hyb, static)
        want_d = scipy.stats.t.interval(0.95, 2, loc=diff.mean(), scale=scipy.stats.sem(diff))
        check(rc == 0 and abs(h['val_loss'] - np.mean(hyb)) < 1e-12 and np.allclose(h['val_loss_ci'], want, atol=1e-4)
              and abs(h['delta_vs_ref'] - diff.mean()) < 1e-12 and np.allclose(h['delta_vs_ref_ci'], want_d, atol=1e-4),
              f"3 seeds: mean {h.get('val_loss')} CI {h.get('val_loss_ci')} vs scipy {want}; paired difference "
              f"CI {h.get('delta_vs_ref_ci')} vs {want_d}")
        check(abs(h['alpha']['0_r'] - 0.82) < 1e-12 and h['flops_vs_ref'] == 1.5 and h['seeds'] == 3 and
              rows['base']['val_loss'] == 2.5 and '| hyb | a hybrid | 3 |' in md and '| 9.6 | 1.50x |' in md,
              f"mean alpha {h['alpha']}, FLOPs {h['flops_vs_ref']}x, 9.6 GFLOP/step, the Markdown row: "
              f"{[l for l in md.splitlines() if l.startswith('| hyb')]}")
        rc, md, err = table(out, '2', 'static=the reference', 'hyb=a hybrid')
        h = json.load(open(os.path.join(out, 'table.json')))['rows'][2]
        check(rc == 0 and h['val_loss_ci'] is None and h['delta_vs_ref_ci'] is None and
              '2.1300 (1 seed, no CI)' in md, f"1 seed: no interval ({[l for l in md.splitlines() if 'hyb' in l]})")
        rc, md, err = table(out, '1,4', 'static=the reference', 'hyb=a hybrid')
        check(rc == 2 and err.count('\n') == 1 and 'seed-4/train.jsonl' in err, f'a missing seed: exit {rc}, {err.strip()}')
        write_run(out, 'other', 1, 2.0, base=2.7)
        rc, md, err = table(out, '1', 'static=the reference', 'other=another base')
        check(rc == 2 and 'different bases' in err, f'runs of different bases: exit {rc}, {err.strip()}')
    finish()


if __name__ == '__main__':
    main()
