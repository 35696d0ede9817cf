"""The stand-in accelerator run (plan.trace): the real train step and refit sender as one rank of a larger
job, on meta tensors under torch's fake process group, where a host tensor in the model or in a
collective fails as it would on GPU.

All layouts run in one spawned process (the meta platform is per process); each test reads its result.
"""

from __future__ import annotations

import pytest

from tests.dist import run_distributed

# name: (world, rank, overrides)
LAYOUTS = {
    "tp1": (1, 0, []),
    "tp2_sp": (8, 5, ["parallel.tensor=2", "parallel.sequence_parallel=true"]),
    "pp2_first": (2, 0, ["parallel.pipeline=2"]),
    "pp2_last": (2, 1, ["parallel.pipeline=2"]),
    "dp2": (2, 1, ["parallel.distributed_optimizer=true"]),
}


def _trace_layouts(layouts: dict) -> dict:
    import traceback

    from megatron_grpo.config import load_config
    from megatron_grpo.model.arch import load_arch
    from megatron_grpo.plan.trace import trace_rank

    out = {}
    for name, (world, rank, overrides) in layouts.items():
        cfg = load_config(None, overrides)  # the embedded tiny model
        try:
            out[name] = trace_rank(cfg, load_arch(cfg.model.hf_config), world, rank)
        except Exception:  # one broken layout must not hide the others
            out[name] = traceback.format_exc()
    return out


@pytest.fixture(scope="module")
def traces() -> dict:
    return run_distributed(_trace_layouts, 1, LAYOUTS)[0]


GPU_PATH_BUGS = ("device discipline: micro-batches, loss normaliser, metric/finite-check collectives and PP "
                 "refit buffers are host tensors on the accelerator path")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=GPU_PATH_BUGS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_train_step_and_refit_run_on_the_standin(traces, layout):
    result = traces[layout]
    assert not isinstance(result, str), result
    memory = result.breakdown
    assert memory["params"] > 0 and memory["grads"] > 0 and memory["optimizer"] > 0
    assert memory["activations"] > 0
    assert result.refit_peak > 0
