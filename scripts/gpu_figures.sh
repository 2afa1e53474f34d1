#!/usr/bin/env bash
# The GPU figures of issue 21, item 6, in one call of a lent GPU machine: OUT_DIR/log.txt and the JSON/CSV files
# the benchmarks write (at most 8 files come back from such a call); results/benchmarks/gpu-* hold what came back.
#
#   bash scripts/gpu_figures.sh OUT_DIR            # on the GPU machine, from the repository root
#   SMALL=1 bash scripts/gpu_figures.sh /tmp/out   # a CPU rehearsal at tiny sizes (minutes)
#
# The machine's python3 (its own torch) runs the checked-out tree, copied as the installed package would lay it
# out (pyproject's package-dir), so no build step. What the image lacks comes as wheels in .whl/ (carry it):
# pydantic, pydantic-core, annotated-types, typing-inspection (cp312) and xautodl (bench_peer). Each benchmark has
# its own time limit, so one that overruns leaves the others' figures (on an H200 the whole ran 382 s with
# gpu_check stopped at a 180 s limit, at 100 steps; it now takes 50).
set -u
out=${1:?an output folder}
mkdir -p "$out"
site=$(mktemp -d)
mkdir -p "$site/egsbench"
cp -r egsbench/. "$site/egsbench/"
for d in benchmark methods tasks results; do cp -r "$d" "$site/egsbench/$d"; done
if ls .whl/*.whl >/dev/null 2>&1; then # xautodl (bench_peer); pydantic and its needs, not in the image
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
export PYTHONPATH=$site PYTHONUNBUFFERED=1
repo=$(pwd)
cd "$site" || exit 1 # not the repository root: its egsbench/ folder holds only the core package

if [ "${SMALL:-0}" = 1 ]; then
    dev=cpu check="--steps 2 --small" size="--channels 4 --layers 3" batches="8" rounds=1 layers=3
else
    dev=cuda check="--steps 50" size="--channels 16 --layers 6" batches="32 64" rounds=5 layers=5
fi
log=$out/log.txt
py() { # py LIMIT_S MODULE ARGS...: one benchmark, its output to the log and the terminal
    local limit=$1 module=$2
    shift 2
    echo "== $module $* (limit ${limit}s)" | tee -a "$log"
    timeout "$limit" python3 -m "egsbench.benchmark.$module" "$@" 2>&1 | tee -a "$log"
    echo "== exit ${PIPESTATUS[0]}" | tee -a "$log"
}
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
        'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
    git -C "$repo" rev-parse --short HEAD 2>/dev/null
} 2>&1 | tee "$log"

py 240 gpu_check $check --device $dev --json "$out/gpu-check.json"
for precision in no bf16; do
    py 50 bench_layout --channels 16 32 --layers $layers --batch 64 --rounds $rounds \
        --device $dev --precision $precision --csv "$out/memory-format-cuda.csv"
done
py 45 bench_engine $size --batch $batches --rounds $rounds --kernels --device $dev
py 70 bench_peer $size --batch $batches --rounds $rounds --device $dev --json "$out/gpu-peer.json"
exit 0
