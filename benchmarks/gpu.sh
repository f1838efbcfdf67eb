#!/usr/bin/env bash
# Issue 16's GPU checks as one run on a lent NVIDIA machine (the `device` tool: some sessions are
# lent one, with 15 minutes of device time in all, so the steps are sized to fit one 10-minute
# call): the CUDA tests, benchmarks/throughput.py on VGG19 at 224x224 (every stage against the
# model's bare passes, and the paper's Table 1 projected), then the search attacks against ART.
# Each step runs under its own time limit; every output lands in $OUT.
#
# The device image has torch, torchvision, timm, scikit-image, pyarrow, typer, rich, pluggy and
# pytest, but not adversarial-robustness-toolbox, pydantic or captum, and it cannot reach a
# package registry. Once per session, here:
#     bash benchmarks/gpu.sh fetch
# downloads their wheels (the versions this checkout's .venv has) into .whl/, which it makes git
# ignore (.git/info/exclude); then
#     run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
# installs them and tracekit itself (built there, no dependencies) into /tmp/site and runs the
# checks.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = fetch ]; then
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >> "$exclude"
    specs=()
    for name in adversarial-robustness-toolbox pydantic pydantic-core annotated-types typing-inspection captum; do
        version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
        specs+=("$name${version:+==$version}")
    done
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${specs[@]}"
fi

out=${OUT:-/tmp/tracekit-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/tracekit-wheel . \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/tracekit-wheel/tracekit-*.whl \
    || { echo "installing the carried wheels or tracekit failed (did you carry .whl?)"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 PATH="/tmp/site/bin:$PATH"

step() {  # step NAME SECONDS COMMAND...: its output to the screen and $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, tracekit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step cuda-tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_compute.py \
    "tests/saliency/test_guided_backprop.py::test_output_on_the_images_device" \
    "tests/attacks/test_native_attacks.py::test_cuda_results_stay_on_cuda_and_match_cpu"
step throughput 240 python3 benchmarks/throughput.py --device cuda --size 224 --n 64 --batch 64 \
    --pixel-iters 5 --boundary-steps 10
step searches 120 python3 benchmarks/attacks.py --device cuda --model resnet18 --only pixel boundary --n 32
