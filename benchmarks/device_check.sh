#!/usr/bin/env bash
# The GPU device check (issue 14), one command: the `gpu` tests, then benchmarks/device_check.py.
# Budget: under 8 minutes on one H100/H200 with 16 cores. Results: OUT/gpu_tests.log,
# OUT/device_check.json, OUT/device_check.md (the table for docs/performance.md), OUT/device_check.log.
#
# Here, once:  bash ../shared/device/fetch-wheels.sh  (Ray, pydantic, skops... into .whl/)
# There:       bash benchmarks/device_check.sh "$OUT"   (with .whl carried along)
set -uo pipefail
out=${1:-device-check}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
timeout 360 python3 -m benchmarks.device_check --output "$out" 2>&1 | tee "$out/device_check.log"
rm -rf "$out/scratch"  # checkpoints of the measured members: only the results come back
