#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels `scripts/gpu_run.sh` installs on a GPU machine that cannot reach it.
#
#   bash scripts/gpu_wheels.sh [DEST] [PYTHON_VERSION]      # defaults: .whl and 3.12 (the lent H200's python3)
#
# The lent machine's image has torch (CUDA), accelerate, tokenizers, huggingface-hub, safetensors, pyarrow, pandas,
# psutil, einops, msgpack, ninja and py-cpuinfo, but transformers 5.17 (below vdtrain's lower bound) and no
# diffusers, datasets, DeepSpeed or pydantic. This takes the newest tested release of each missing or too-old
# package (docs/compatibility.md) and the small pure-Python needs the image lacks; nothing here needs CUDA.
# DeepSpeed publishes only a source archive: its wheel is built here without its CUDA ops (they JIT-build on use).
set -euo pipefail
dest="${1:-.whl}"
python_version="${2:-3.12}"
mkdir -p "$dest"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
        "${platforms[@]}" -d "$dest" "$@"
}
download transformers==5.24.0 peft==0.21.2 diffusers==0.42.1 datasets==5.2.0 \
    dill==0.4.1 multiprocess==0.70.19 regex==2026.11.19 importlib-metadata==10.2.0 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
if ! ls "$dest"/deepspeed-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$dest" deepspeed==0.19.8 \
        || DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps -w "$dest" deepspeed==0.19.8
fi
du -sh "$dest"
ls "$dest"
