#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (the device machine: torch, Triton and
# sentence-transformers preinstalled, no network). Expects ../shared/models/splade-tiny and
# ../shared/data/scifact/corpus.jsonl beside the checkout. Logs go to ${OUT:-.}/.
#   bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
# 1. Triton kernels compiled (not interpreted) against the reference
TRITON_INTERPRET=0 timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels.py 2>&1 | tee "$out/test_kernels.txt" | tail -5
# 1b. a 250,002-entry decoder head: weights and gradients equal full-logit autograd on CUDA
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -x -p no:cacheprovider tests/test_devices.py 2>&1 | tee "$out/test_devices.txt" | tail -5
# 1c. the largest bf16 batch through the head at V=250,002 within 4 GiB, ours vs eager (#14)
timeout "${VOCAB_TIMEOUT:-180}" python3 benchmarks/bench_vocab.py --device cuda --dtype bf16 2>&1 | tee "$out/bench_vocab_gpu.txt" | tail -12
# 2. the fused head vs eager and torch.compile: bf16, V 30,522 / 250,002
timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_kernel.py --repeats 3 --no-compile 2>&1 | tee "$out/bench_kernel.txt" | tail -30
# 3. encoding: lsr vs sentence-transformers on splade-tiny
timeout "${ENCODE_TIMEOUT:-90}" python3 benchmarks/bench_encode_gpu.py --n-docs 4096 --batch-size 128 2>&1 | tee "$out/bench_encode_gpu.txt" | tail -6
