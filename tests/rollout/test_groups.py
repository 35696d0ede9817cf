"""``ColocatedEngines`` over a world of 4 gloo ranks: two TP-2 engines (ranks 0-1 and 2-3) or four TP-1
ones. A stand-in engine makes its samples from its requests (no vLLM): what is checked is who asks which
engine for what, and what every rank gets back."""

from __future__ import annotations

import pytest

from tests.dist import run_distributed

PROMPTS = [[i, i + 1] for i in range(7)]  # 7 prompts: the engines get unequal shares


class EchoEngine:
    """Sample j of prompt p is (first_index + i, j, p...): the index a prompt is seeded by, and its tokens."""

    def __init__(self):
        self.calls: list[tuple] = []

    def generate(self, prompts, sampling, seed, first_index=0, routing=False):
        from megatron_grpo.rollout.types import Sample

        self.calls.append(("generate", first_index, len(prompts), seed))
        return [[Sample([first_index + i, j, *p], [0.0] * (2 + len(p)), "", "stop") for j in range(sampling.n)]
                for i, p in enumerate(prompts)]

    def score(self, sequences, prompt_lens):
        import torch.distributed as dist

        self.calls.append(("score", len(sequences)))
        return [[float(dist.get_rank())] for _ in sequences]  # who answered


def _worker(tensor_parallel: int) -> dict:
    import torch.distributed as dist

    from megatron_grpo.config.rollout import SamplingConfig
    from megatron_grpo.rollout.groups import ColocatedEngines

    dist.init_process_group("gloo")
    engine = EchoEngine()
    group = ColocatedEngines(engine, tensor_parallel)
    samples = group.generate(PROMPTS, SamplingConfig(n=2), seed=5, first_index=10)
    scored = group.score_each([[1, 2, 3]], [1])
    dist.destroy_process_group()
    return {"samples": [[s.token_ids for s in g] for g in samples], "scored": scored, "calls": engine.calls}


@pytest.mark.slow
@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_a_batch_is_split_over_the_engines_and_every_rank_gets_all_of_it(tensor_parallel):
    ranks = run_distributed(_worker, 4, tensor_parallel, timeout=120)
    one_engine = [[[10 + i, j, *p] for j in range(2)] for i, p in enumerate(PROMPTS)]
    assert all(r["samples"] == one_engine for r in ranks)  # the samples one engine would have drawn, in order
    calls = [[c for c in r["calls"] if c[0] == "generate"] for r in ranks]
    engines = 4 // tensor_parallel
    shares = [calls[e * tensor_parallel] for e in range(engines)]
    assert sum(c[0][2] for c in shares) == len(PROMPTS) and all(len(c) == 1 for c in shares)
    for rank, made in enumerate(calls):  # every worker of an engine was asked the same
        assert made == calls[rank - rank % tensor_parallel]
    assert all(any(c[0] == "score" for c in r["calls"]) for r in ranks)  # score_each: every rank computes
    assert ranks[0]["scored"] == [[[float(e * tensor_parallel)]] for e in range(engines)]  # engine order
    assert all(r["scored"] == [] for r in ranks[1:])


def test_spawned_engines_get_the_gpus_the_trainer_sees_by_those_numbers():
    from megatron_grpo.rollout.remote import EngineError, engine_gpus

    assert engine_gpus(None, range(2, 4)) == "2,3"
    assert engine_gpus("4,5,6,7", range(2, 4)) == "6,7"  # Slurm gave the job physical GPUs 4-7
    assert engine_gpus("GPU-a, GPU-b", range(0, 1)) == "GPU-a"
    with pytest.raises(EngineError, match="only 4 visible"):
        engine_gpus("4,5,6,7", range(4, 6))
