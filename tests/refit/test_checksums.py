"""The refit check's verdict across ranks, with stand-in engines (no vLLM): one bad rank fails all."""

from __future__ import annotations

from tests.dist import run_distributed

SENT = {"a.weight": 1.5, "b.weight": -2.0}


class _Engine:
    def __init__(self, held):
        self._held = held

    def weight_checksums(self):
        return self._held


def _verdicts(held_by_case: dict[str, list]) -> dict[str, float | None]:
    import torch.distributed as dist

    from megatron_grpo.refit.stream import _checksums_ok

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = {case: _checksums_ok(_Engine(held[rank]), SENT) for case, held in held_by_case.items()}
    dist.destroy_process_group()
    return out


def test_checksum_verdict_is_all_ranks_and_unknown_when_an_engine_cannot_read_back():
    stale = {**SENT, "b.weight": -2.5}
    cases = {"agree": [SENT, SENT], "rank1_stale": [SENT, stale], "sharded": [None, None]}
    for verdicts in run_distributed(_verdicts, 2, cases):
        assert verdicts == {"agree": 1.0, "rank1_stale": 0.0, "sharded": None}
