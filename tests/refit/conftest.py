"""The engines' first generate compiles sampler code; keep the compile cache across runs, as
tests/rollout does (the spawned workers inherit the variable)."""

import os
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".cache" / "torchinductor"))
