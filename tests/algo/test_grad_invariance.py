"""The mini-batch gradient must not depend on how it is cut into micro-batches or DP ranks."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron_grpo.algo import (
    LossNorm,
    TrainBatch,
    gather_response,
    pack_micro_batches,
    policy_loss,
    prepare_train_batch,
)
from megatron_grpo.config.algo import LOSS_AGG_MODES, AlgoConfig

from .conftest import make_rollout

MAX_RESP = 6


class TinyLM(torch.nn.Module):
    """Causal: embedding -> GRU -> logits, so right padding never reaches a real token."""

    def __init__(self, vocab=11, hidden=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, hidden)
        self.rnn = torch.nn.GRU(hidden, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def response_logprobs(self, batch: TrainBatch) -> torch.Tensor:  # [n, L]
        logp = torch.log_softmax(self.head(self.rnn(self.emb(batch.input_ids))[0]), dim=-1)
        per_token = logp[:, :-1].gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        per_token = torch.nn.functional.pad(per_token, (1, 0))  # token j scored by logits at j - 1
        return gather_response(per_token, batch.prompt_lens, batch.loss_mask.shape[1])


def make_case(seed=0):
    torch.manual_seed(seed)
    model = TinyLM().double()
    rollout = make_rollout(groups=4, group_size=4, max_resp=MAX_RESP, seed=seed)
    with torch.no_grad():
        probe = TrainBatch(input_ids=rollout.input_ids, prompt_lens=rollout.prompt_lens,
                           response_lens=rollout.response_lens, loss_mask=rollout.response_mask.double(),
                           advantages=None, old_logprobs=None, is_weights=None)
        old = model.response_logprobs(probe) * rollout.response_mask
    # pretend a step was taken so ratios differ from 1 and clipping is active
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch, _ = prepare_train_batch(rollout, old, AlgoConfig(), MAX_RESP)
    return model, batch


def grad_of(model, batch, parts, norm, cfg):
    """Sum of the micro-batch partial losses' gradients (what DDP-with-SUM produces)."""
    model.zero_grad()
    for rows in parts:
        mb = batch.select(rows)
        loss, _ = policy_loss(model.response_logprobs(mb), mb.old_logprobs, mb.advantages, mb.loss_mask, norm,
                            cfg, is_weights=mb.is_weights)
        loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def full_grad(model, batch, cfg):
    norm = LossNorm.from_counts(LossNorm.counts([batch.loss_mask]), MAX_RESP)
    return grad_of(model, batch, [list(range(batch.loss_mask.shape[0]))], norm, cfg)


# every aggregation with PPO-clip, and every other registered loss with its own
CASES = {**{f"grpo/{mode}": AlgoConfig(loss_agg_mode=mode, clip_ratio_high=0.28) for mode in LOSS_AGG_MODES},
         "gspo": AlgoConfig(loss="gspo", clip_ratio_low=0.05, clip_ratio_high=0.05),
         "drgrpo": AlgoConfig(loss="drgrpo"), "cispo": AlgoConfig(loss="cispo", clip_ratio_high=0.1)}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n_micro", [1, 2, 7])
def test_micro_batch_split_gives_same_gradient(case, n_micro):
    model, batch = make_case()
    cfg = CASES[case]
    want = full_grad(model, batch, cfg)
    n = batch.loss_mask.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n_micro)).tolist()
    parts = [perm[k::n_micro] for k in range(n_micro)]  # uneven, unsorted, different widths
    norm = LossNorm.from_counts(sum(LossNorm.counts([batch.select(p).loss_mask]) for p in parts), MAX_RESP)
    got = grad_of(model, batch, parts, norm, cfg)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _dp_worker(rank, world, init_file, out_file, model, batch):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    plan = pack_micro_batches(batch.seq_lens.tolist(), world, token_budget=24)
    mine = plan.ranks[rank]
    results = {}
    for case, cfg in CASES.items():
        counts = LossNorm.counts([batch.select(mb).loss_mask for mb in mine])
        dist.all_reduce(counts)  # SUM over DP ranks
        norm = LossNorm.from_counts(counts, MAX_RESP)
        grad = grad_of(model, batch, mine, norm, cfg)
        dist.all_reduce(grad)  # SUM, not average
        results[case] = grad
    if rank == 0:
        torch.save({"results": results, "n_micro": [len(r) for r in plan.ranks]}, out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_dp2_gives_same_gradient_as_dp1():
    model, batch = make_case(seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "grads.pt")
        mp.spawn(_dp_worker, args=(2, os.path.join(tmp, "init"), out, model, batch), nprocs=2, join=True)
        saved = torch.load(out)
    assert min(saved["n_micro"]) >= 2  # several micro-batches on each rank
    for case, cfg in CASES.items():
        want = full_grad(model, batch, cfg)
        torch.testing.assert_close(saved["results"][case], want, rtol=1e-10, atol=1e-12)
