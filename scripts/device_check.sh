#!/usr/bin/env bash
# End to end on one device: train in float32 and in mixed precision, evaluate, diagnose, and
# benchmark (float32 and mixed precision in one bench run), every output under OUT.
#
#   scripts/device_check.sh cuda runs/gpu       # the GPU check of docs/performance.md
#   scripts/device_check.sh cpu runs/cpu-check  # the same steps on the CPU
#
# BENCH_ARGS replaces the benchmark's data flags (default: the Beauty preset on
# ../shared/data/Beauty.txt, or a synthetic set of its shape when that file is absent).
# SIGMA_PYRO names the command (default: sigma-pyro on the PATH), PYTHON the interpreter
# with sigma_pyro installed (default: python3), DDP_GPUS the ranks of the DDP smoke run.
set -euo pipefail
device=${1:-cuda}
out=${2:-runs/device-check-$device}
sigma=${SIGMA_PYRO:-sigma-pyro}
bench_args=${BENCH_ARGS:-}
mkdir -p "$out"

python3 - "$device" <<'EOF'
import sys, torch
device = torch.device(sys.argv[1])
if device.type == "cuda":
    if not torch.cuda.is_available():
        sys.exit(f"device_check: {sys.argv[1]}: torch {torch.__version__} sees no CUDA device")
    print("device:", torch.cuda.get_device_name(device), "| torch", torch.__version__)
else:
    print("device:", device, "| torch", torch.__version__)
EOF

step() { echo "== $*"; "$@"; }
step "$sigma" train --device "$device" --epochs 3 --no-progress --out "$out/synthetic"
step "$sigma" train --device "$device" --mixed-precision --epochs 3 --no-progress \
    --out "$out/synthetic-mixed-precision"
step "$sigma" evaluate --model "$out/synthetic" --split both
step "$sigma" diagnose --model "$out/synthetic" --out "$out/diagnose" --users 64 --samples 32
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
step "$sigma" bench --device "$device" --mixed-precision $bench_args --out "$out/bench"
# Data-parallel smoke run (docs/scaling.md): DDP_GPUS ranks (1 by default; gloo on the CPU,
# nccl on CUDA) train 2 epochs, resume a third, and the sharded evaluation in metrics.json
# must equal a one-process evaluation of the saved model.
ranks=${DDP_GPUS:-1}
ddp_out="$out/ddp-$ranks"
python_bin=${PYTHON:-python3}
step "$python_bin" -m torch.distributed.run --standalone --nproc-per-node "$ranks" \
    -m sigma_pyro train --device "$device" --epochs 2 --no-progress --out "$ddp_out"
step "$python_bin" -m torch.distributed.run --standalone --nproc-per-node "$ranks" \
    -m sigma_pyro train --device "$device" --epochs 3 --resume --no-progress --out "$ddp_out"
"$python_bin" - "$ddp_out" <<'EOF'
import json, sys
from sigma_pyro.api import SigmaRecommender
folder = sys.argv[1]
saved = json.load(open(f"{folder}/metrics.json"))
rec = SigmaRecommender.load(folder)
rec.load_data()
again = rec.evaluate("test")
if again != saved["test"]:
    sys.exit(f"device_check: sharded test metrics {saved['test']} != one process {again}")
print(f"device_check: DDP on {saved['world_size']} rank(s): sharded evaluation matches")
EOF

echo "device_check: all steps passed on $device; results under $out"
