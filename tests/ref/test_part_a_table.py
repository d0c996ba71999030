"""src/tools/part_a_table.py, the part-A table over DiT seeds, on synthetic eval-states JSON files:
the across-seed mean and 95% CI against scipy's Student t, the differences to the class mean and the
tuned state, the share of the tuned gain, one seed falling back to the file's bootstrap CI, a control
row, and the refusal (exit 2) of files whose DiT-independent rows differ."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats

from testlib import ROOT, check, finish

TOOL = os.path.join(ROOT, 'src', 'tools', 'part_a_table.py')


def eval_json(path, gen, wrong, zero=2.0, mean=1.99, tuned=1.95, knn=0.5, class_mean_shift=0.0):
    ce = {'zero': zero, 'class_mean': mean + class_mean_shift, 'generated': gen, 'generated_wrong_label': wrong,
          'true_modelled': 1.97, 'true_full': 1.9, 'tuned': tuned}
    pooled = {'contexts': 40, 'tokens': 4000.0}
    for k, v in ce.items():
        pooled[k] = {'ce': v, 'delta_vs_zero': v - zero, 'ci95': [v - zero - 0.01, v - zero + 0.01]}
    j = {'model': path, 'signature': 'x', 'knn': {'generated': {'accuracy': [knn, knn]}, 'held_out': {'accuracy': [0.8, 0.8]}},
         'continuation': {'initial_states': list(ce), 'pooled': pooled}}
    with open(path, 'w') as f:
        json.dump(j, f)
    return path


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as d:
    gens = [1.985, 1.975, 1.990]
    seeds = [eval_json(f'{d}/s{i}.json', g, g + 0.02, knn=0.4 + 0.1 * i) for i, g in enumerate(gens)]
    ctrl = eval_json(f'{d}/c.json', 1.999, 2.01, knn=0.2)
    r = run(*seeds, '--control', f'shuffled={ctrl}', '--out-json', f'{d}/t.json', '--out-md', f'{d}/t.md')
    check(r.returncode == 0, f'three seeds and a control: exit 0 ({r.stderr.strip()})')
    t = json.load(open(f'{d}/t.json'))
    g = next(x for x in t['rows'] if x['state'] == 'generated')
    deltas = np.array(gens) - 2.0
    lo, hi = stats.t.interval(0.95, len(deltas) - 1, loc=deltas.mean(), scale=stats.sem(deltas))
    check(abs(g['vs_zero'] - deltas.mean()) < 1e-12 and abs(g['ci'][0] - lo) < 2e-4 * abs(hi - lo)
          and abs(g['ci'][1] - hi) < 2e-4 * abs(hi - lo),
          f"generated vs zero {g['vs_zero']:+.5f} [{g['ci'][0]:+.5f}, {g['ci'][1]:+.5f}] = scipy's t interval [{lo:+.5f}, {hi:+.5f}]")
    dm = np.array(gens) - 1.99
    lo, hi = stats.t.interval(0.95, 2, loc=dm.mean(), scale=stats.sem(dm))
    check(abs(g['vs_class_mean']['ci'][0] - lo) < 1e-4 and abs(g['vs_class_mean']['ci'][1] - hi) < 1e-4,
          'generated vs class mean: t interval across seeds')
    check(abs(g['share_of_tuned_gain'] - (2.0 - np.mean(gens)) / (2.0 - 1.95)) < 1e-12,
          f"share of the tuned gain {g['share_of_tuned_gain']:.3f}")
    c = next(x for x in t['rows'] if x['state'] == 'control:shuffled')
    check(abs(c['vs_zero'] + 0.001) < 1e-12 and np.allclose(c['ci'], [-0.011, 0.009], atol=1e-12), 'control row: its own bootstrap CI')
    check(abs(t['knn1_generated']['mean'] - 0.5) < 1e-12, 'kNN@1 of generated states: mean over seeds')
    check(os.path.exists(f'{d}/t.md') and 'generated under a wrong label' in open(f'{d}/t.md').read(), 'markdown written')
    r = run(seeds[0], '--out-json', f'{d}/one.json')
    one = next(x for x in json.load(open(f'{d}/one.json'))['rows'] if x['state'] == 'generated')
    check(r.returncode == 0 and one['ci'] == [gens[0] - 2.0 - 0.01, gens[0] - 2.0 + 0.01] and 'bootstrap' in one['ci_kind'],
          'one seed: the bootstrap CI over contexts of its file')
    other = eval_json(f'{d}/other.json', 1.98, 2.0, class_mean_shift=0.01)
    r = run(seeds[0], other, '--out-json', f'{d}/bad.json')
    check(r.returncode == 2 and 'class_mean' in r.stderr and not os.path.exists(f'{d}/bad.json'),
          f'files of two jobs refused: {r.stderr.strip()}')
    r = run(seeds[0], '--control', 'nofile')
    check(r.returncode == 2, f'a bad --control refused: {r.stderr.strip()}')
finish()
