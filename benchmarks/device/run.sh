#!/usr/bin/env bash
# Run ON a lent GPU machine, from the repository root, after benchmarks/device/prepare.sh here:
#   run(command="bash benchmarks/device/run.sh", carry=[".whl"], timeout_s=590)
# Three steps, each under its own time limit and each leaving its report in $OUT as it finishes, so a step that
# runs long loses only itself: the bucket-plan calibration, the 10^6-transition benchmark of the single-process
# path (b) and the actor pool (c, one actor on the GPU), then (a) and (a') on the same data. Runs on a CPU too
# (no .whl/: the installed packages are used), with SIZE=20000 for a quick check of the script itself.
set -uo pipefail
OUT=${OUT:-/tmp/ailot-device}
SIZE=${SIZE:-1000000}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, ott, ray; print('jax', jax.__version__, jax.devices(), 'ott', ott.__version__, 'ray', ray.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
NOTE=${NOTE:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)}
NOTE=${NOTE:-"$(nproc)-core CPU"}

step() {  # step <seconds> <log name> <command...>: run under a limit; the log and any report stay in $OUT
    local limit=$1 name=$2; shift 2
    echo "== $name: $* (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    echo "== $name: rc $rc after $((SECONDS - t0)) s"
}

step 90 calibrate python3 benchmarks/calibrate_plan.py --device-note "$NOTE" --out "$OUT/calibrate.md"
# one steady call per path (the budget was sized for it; one GPU actor compiles every bucket in its first call);
# GPU actors are never pinned, so one (c) row
step 210 bench-b-c python3 benchmarks/bench_relabel.py --transitions "$SIZE" --paths b,c --actors 1 --pin on \
    --steady-runs 1 --chunk-sizes 1,32 --min-buckets 64 --no-tight --device-note "$NOTE" --out "$OUT/bench-b-c.md"
step 150 bench-a python3 benchmarks/bench_relabel.py --transitions "$SIZE" --paths a,a2,b --a-episodes 60 \
    --steady-runs 1 --chunk-sizes "" --min-buckets "" --momenta "" --no-tight --device-note "$NOTE" \
    --out "$OUT/bench-a.md"
