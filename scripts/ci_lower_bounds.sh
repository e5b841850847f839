#!/usr/bin/env bash
# The compatibility subset (every family's adapter, the Bunny port, the trainer, generation, VCD, the LLaVA tokenizer
# facts, the math and the data path) in a fresh venv with transformers, peft, accelerate, datasets and diffusers pinned
# to the lower bounds pyproject.toml declares.
# Run by .ci/run; by hand: `bash scripts/ci_lower_bounds.sh` (VDTRAIN_LOWER_VENV picks the venv's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VDTRAIN_LOWER_VENV:-${TMPDIR:-/tmp}/vdtrain-lower-bounds}"
pins=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
bounds = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", d.split(";")[0].strip()).groups() for d in deps if ">=" in d)
print(" ".join(f"{name}=={bounds[name]}" for name in ("transformers", "peft", "accelerate", "datasets", "diffusers")))
PY
)
echo "lower bounds: $pins"
python -m venv --clear "$venv"
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e ".[dev]" $pins
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|accelerate|datasets|diffusers) '
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_adapters.py tests/test_bunny.py \
    tests/test_bunny_published.py tests/test_trainer.py tests/test_generate.py tests/test_vcd.py \
    tests/test_llava_tokenizer.py tests/test_math.py tests/test_data.py tests/test_data_arrow.py
