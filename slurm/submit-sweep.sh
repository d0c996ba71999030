#!/usr/bin/env bash
# Submits a scaling sweep: one Slurm job array per node count, one element per model, from a sweep
# file like jobs/scaling-sweep.yaml (its comments describe the keys).
#
#   slurm/submit-sweep.sh [--dry-run] [SWEEP.yaml] [-- SBATCH OPTIONS...]
#
# --dry-run prints the sbatch commands instead of running them; submitting prints one line per array,
# "submitted JOBID: ...". The jobs run in the repository root (paths in the sweep file are relative
# to it), whatever the directory this is called from. The sweep file is checked first (keys, names,
# every global batch divisible by the ranks of every node count), so that mistakes fail here with
# exit code 2, not in the queue. Needs Debian's /usr/bin/python3 with python3-yaml.
set -euo pipefail
dry_run=0
sweep=jobs/scaling-sweep.yaml
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "submit-sweep: unknown option $1" >&2; exit 2 ;;
    *) sweep=$1 ;;
  esac
  shift
done
[ -f "$sweep" ] || { echo "submit-sweep: $sweep: no such file" >&2; exit 2; }
sweep=$(cd "$(dirname "$sweep")" && pwd)/$(basename "$sweep")
cd "$(dirname "$0")/.."

exec /usr/bin/python3 - "$sweep" "$dry_run" slurm/sweep.sbatch "${extra[@]}" <<'EOF'
import re, shlex, subprocess, sys
import yaml

sweep_path, dry_run, sweep_script, extra = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]
SHORT = {"n_layer": "model.n_layer", "n_embd": "model.n_embd", "head_size": "model.head_size",
         "vocab_size": "model.vocab_size", "steps": "train.steps", "ctx_len": "train.ctx_len",
         "batch_size": "train.batch_size", "micro_batch": "train.micro_batch"}

def die(msg):
    print(f"submit-sweep: {sweep_path}: {msg}", file=sys.stderr)
    sys.exit(2)

def scalar(key, value):
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        die(f"{key}: expected a number or a string, got {value!r}")
    text = str(value)
    if not text or re.search(r"\s", text):
        die(f"{key}: values may not be empty or contain spaces ({text!r})")
    return text

def count(key, value, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        die(f"{key}: expected an integer >= {least}, got {value!r}")
    return value

def as_int(text):
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else text

def node_list(key, value):
    if not isinstance(value, list) or not value or not all(isinstance(n, int) and n >= 1 for n in value):
        die(f"{key}: expected a list of node counts >= 1, got {value!r}")
    return value

try:
    with open(sweep_path) as f:
        sweep = yaml.safe_load(f)
except yaml.YAMLError as e:
    die(f"not valid YAML: {str(e).splitlines()[0]}")
if not isinstance(sweep, dict):
    die("expected a mapping")
known = {"name", "config", "nodes", "tasks_per_node", "cpus_per_task", "time", "sbatch", "set", "models"}
for key in sweep:
    if key not in known:
        die(f"unknown key '{key}' (known: {', '.join(sorted(known))})")
for key in ("name", "config", "nodes", "models"):
    if key not in sweep:
        die(f"missing key '{key}'")
name = scalar("name", sweep["name"])
if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
    die(f"name: '{name}' may use only letters, digits, '.', '_', '-'")
config = scalar("config", sweep["config"])
nodes = node_list("nodes", sweep["nodes"])
tasks_per_node = count("tasks_per_node", sweep.get("tasks_per_node", 1), 1)
cpus_per_task = count("cpus_per_task", sweep.get("cpus_per_task", 0), 0)
site = [scalar("sbatch", s) for s in sweep.get("sbatch") or []]
common = [f"{k}={scalar('set.' + str(k), v)}" for k, v in (sweep.get("set") or {}).items()]
models = sweep["models"]
if not isinstance(models, list) or not models:
    die("models: expected a non-empty list")

# each model: its array element argument "NAME key=value ..." and its node counts
elements, model_nodes, seen = [], [], set()
for i, m in enumerate(models):
    if not isinstance(m, dict) or "name" not in m:
        die(f"models[{i}]: expected a mapping with a name")
    mname = scalar(f"models[{i}].name", m["name"])
    if not re.fullmatch(r"[A-Za-z0-9._-]+", mname) or mname in seen:
        die(f"models[{i}].name: '{mname}' must be unique and use only letters, digits, '.', '_', '-'")
    seen.add(mname)
    sets = list(common)
    for k, v in m.items():
        if k in ("name", "nodes"):
            continue
        full = SHORT.get(k, k)
        if "." not in full:
            die(f"models[{i}] ({mname}): unknown key '{k}' (known: {', '.join(SHORT)}, or section.key)")
        sets.append(f"{full}={scalar(f'models[{i}].{k}', v)}")
    model_nodes.append(node_list(f"models[{i}].nodes", m.get("nodes", nodes)))
    # the trainer splits the global batch over the ranks (train.micro_batch each, 0 = batch / ranks)
    values = dict(s.split("=", 1) for s in sets)
    if "train.batch_size" in values:
        batch = count(f"{mname}: train.batch_size", as_int(values["train.batch_size"]), 1)
        micro = max(count(f"{mname}: train.micro_batch", as_int(values.get("train.micro_batch", "0")), 0), 1)
        for n in model_nodes[-1]:
            if batch % (n * tasks_per_node * micro):
                die(f"{mname} on {n} node(s): train.batch_size {batch} is not a multiple of "
                    f"{n * tasks_per_node} rank(s) x train.micro_batch {micro}")
    elements.append(" ".join([mname] + sets))

for n in sorted({n for ns in model_nodes for n in ns}):
    indices = [i for i, ns in enumerate(model_nodes) if n in ns]
    cmd = ["sbatch", f"--job-name={name}", f"--array={','.join(map(str, indices))}", f"--nodes={n}",
           f"--ntasks-per-node={tasks_per_node}"]
    if cpus_per_task > 0:
        cmd.append(f"--cpus-per-task={cpus_per_task}")
    if sweep.get("time"):
        cmd.append(f"--time={scalar('time', sweep['time'])}")
    cmd += site + extra
    cmd += [sweep_script, config] + elements
    what = f"{n} node(s) x {tasks_per_node} task(s): " + ", ".join(elements[i].split()[0] for i in indices)
    if dry_run:
        print(f"# {what}")
        print(shlex.join(cmd))
        continue
    out = subprocess.run(["sbatch", "--parsable"] + cmd[1:], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"submit-sweep: sbatch failed for {what}: {out.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
    print(f"submitted {out.stdout.strip().split(';')[0]}: {what}", flush=True)
EOF
