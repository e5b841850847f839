#!/usr/bin/env bash
# The one command for a lent GPU machine that cannot reach PyPI: put the carried wheels (scripts/gpu_wheels.sh, in
# .whl/) in front of the image's own packages, record what imports, then run scripts/gpu_check.py. Every file it
# writes lands in $OUT (or the current folder): versions.txt, gpu_check.log, gpu_check.json, gpu_check.md.
# Run it from the repository root.
#
#   bash scripts/gpu_run.sh [gpu_check.py flags]       # e.g. --parts step,filter or --tiny (a CPU rehearsal)
#
# PYTHON (default python3), VDTRAIN_WHEELS (default .whl) and VDTRAIN_SITE (where they go) change the defaults.
set -uo pipefail
out="${OUT:-.}"
python="${PYTHON:-python3}"
site="${VDTRAIN_SITE:-/tmp/vdtrain-site}"
wheels="${VDTRAIN_WHEELS:-.whl}"
if ls "$wheels"/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl || { echo "gpu_run: installing $wheels/ failed" >&2; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$python" - <<'EOF' 2>&1 | tee "$out/versions.txt"
import importlib

for name in ("torch", "transformers", "peft", "accelerate", "datasets", "diffusers", "deepspeed", "tokenizers",
             "huggingface_hub", "safetensors", "pyarrow", "vdtrain"):
    try:
        module = importlib.import_module(name)
        print(f"{name:16} {getattr(module, '__version__', '?'):24} {getattr(module, '__file__', '')}")
    except Exception as error:  # recorded, and the check still runs: its parts say which one it breaks
        print(f"{name:16} FAILED {type(error).__name__}: {error}")
import torch

print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
"$python" scripts/gpu_check.py --output "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
