#!/usr/bin/env bash
# The zoo's families whose processors need torchvision (tests/test_zoo_torchvision.py, marker `torchvision`), in a venv
# that sees the main environment's packages (--system-site-packages) and adds a torch + torchvision pair that imports
# together: PyPI's torchvision does not import beside the CPU torch 2.13 of the main venv. The pair is a CUDA build
# (5.2 GB with its nvidia-* wheels, ~2 min to install from this machine's disk); an existing venv is reused.
# Run by .ci/run after the main environment is installed; by hand: `bash scripts/ci_torchvision.sh`
# (VDTRAIN_TORCHVISION_VENV picks the venv's folder, VDTRAIN_TORCHVISION_PAIR the pair).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
venv="${VDTRAIN_TORCHVISION_VENV:-${TMPDIR:-/tmp}/vdtrain-torchvision}"
pair="${VDTRAIN_TORCHVISION_PAIR:-torch==2.14.1 torchvision==0.29.1}"
extra=$(python - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["torchvision"]
print(" ".join(dep for dep in deps if not dep.startswith("torchvision")))
PY
)
if ! "$venv/bin/python" -c "import transformers, vdtrain" >/dev/null 2>&1; then
    python -m venv --clear --system-site-packages "$venv"
fi
# shellcheck disable=SC2086  # word splitting intended: the pair and the extra are lists of requirements
"$venv/bin/python" -m pip install -q --no-compile $pair $extra  # no .pyc for 5 GB: halves the install
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|transformers|num2words) '
echo "torchvision venv ready in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))"
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m torchvision tests/test_zoo*.py
echo "torchvision step done in $((SECONDS - start)) s"
