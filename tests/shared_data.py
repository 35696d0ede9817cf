"""The offline data mirror beside the repository (``../shared``: eval sets, DAPO-Math, the Qwen3 tokenizer).
CI has it; a user's fresh clone does not, and the tests that read it skip there with this reason."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason=f"the offline data mirror {DATA} is absent")


def qwen3_tokenizer():
    """The Qwen3 tokenizer of the mirror; the calling test (or fixture) skips without the mirror."""
    if not DATA.is_dir():
        pytest.skip(f"the offline data mirror {DATA} is absent")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DATA / "tokenizer" / "qwen3")
