"""``checkpoint.async_save``: the shards are written by a forked process while training goes on; the checkpoint
holds the state of the moment it was taken, and is published only once every rank's write is complete.

Two ranks (TP2, distributed optimizer): save step 1 asynchronously, train a step while it writes, then
publish; a fresh policy loaded from it has step 1's weights, not step 2's."""

from __future__ import annotations

import torch

from tests.checkpoint.test_resharding import _policy, _snapshot, _step
from tests.dist import run_distributed
from tests.model.tiny import tiny_hf_config

CONFIG = tiny_hf_config(layers=2)


def _save_async_while_training(root: str) -> dict:
    from megatron.core import parallel_state as ps

    from megatron_grpo.checkpoint import CheckpointWriter, latest_checkpoint, load_checkpoint
    from megatron_grpo.checkpoint.files import read_trainer_state

    vocab = CONFIG["vocab_size"]
    policy = _policy(CONFIG, {"tensor": 2})
    _step(policy, vocab)
    saved = _frozen(_snapshot(policy, vocab))
    writer = CheckpointWriter(async_save=True)
    writer.save(root, 1, policy, {"step": 1}, keep_last=2)
    unpublished = latest_checkpoint(root)        # the write is in flight: nothing published yet
    _step(policy, vocab)                          # training goes on, changing the weights in place
    trained = _snapshot(policy, vocab)
    writer.finish()
    published = latest_checkpoint(root)
    writer.save(root, 2, policy, {"step": 2}, keep_last=2, wait=True)
    after_wait = latest_checkpoint(root)
    ps.destroy_model_parallel()

    fresh = _policy(CONFIG, {"tensor": 2})
    extra = load_checkpoint(published, fresh)
    loaded = _snapshot(fresh, vocab)
    return {"unpublished": unpublished, "published": published.name, "after_wait": after_wait.name,
            "extra": extra, "state": read_trainer_state(published)["step"], "saved": saved, "trained": trained,
            "loaded": loaded}


def _frozen(snapshot: dict) -> dict:
    return {**snapshot, "weights": {k: v.clone() for k, v in snapshot["weights"].items()}}


def test_an_async_save_holds_the_state_it_was_taken_at_and_is_published_when_complete(tmp_path):
    ranks = run_distributed(_save_async_while_training, 2, str(tmp_path / "ckpt"))
    for r in ranks:
        assert r["unpublished"] is None
        assert (r["published"], r["after_wait"], r["extra"], r["state"]) == ("step_1", "step_2", {"step": 1}, 1)
        assert not torch.equal(r["trained"]["logprobs"], r["saved"]["logprobs"])  # the step did change them
        assert torch.equal(r["loaded"]["logprobs"], r["saved"]["logprobs"])
        for name, tensor in r["saved"]["weights"].items():
            assert torch.equal(r["loaded"]["weights"][name], tensor), name
        assert r["loaded"]["lr"] == r["saved"]["lr"]
