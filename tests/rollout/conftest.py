"""Shared set-up for the rollout tests: a persistent compile cache (first vLLM generate compiles
sampler code: ~17 s cold, ~2 s from the cache)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "torchinductor"))
