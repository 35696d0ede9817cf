import math

import pytest
import torch

from megatron_grpo.algo import LossNorm, aggregate, kl_penalty, policy_loss, reduce_metrics
from megatron_grpo.config.algo import LOSS_AGG_MODES, AlgoConfig

L = 6


def random_inputs(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([0, 1, L] + torch.randint(0, L + 1, (n - 3,), generator=g).tolist())
    mask = (torch.arange(L)[None, :] < lens[:, None]).double()
    old = -torch.rand(n, L, generator=g, dtype=torch.float64) * 3
    delta = torch.randn(n, L, generator=g, dtype=torch.float64) * 0.3
    delta[3, :] = torch.tensor([8.0, -8.0, 0.25, -0.25, 3.0, -3.0])  # extreme ratios
    adv = torch.randn(n, generator=g, dtype=torch.float64)[:, None].expand(n, L).clone()
    adv[4] = 0.0
    return {
        "logprobs": old + delta, "old": old, "adv": adv * mask, "mask": mask,
        "ref": old + torch.randn(n, L, generator=g, dtype=torch.float64) * 0.5,
        "entropy": torch.rand(n, L, generator=g, dtype=torch.float64) * 2,
        "is_w": torch.rand(n, L, generator=g, dtype=torch.float64) * 2,
    }


def naive_token_loss(lp, old, a, low, high, dual):
    r = math.exp(lp - old)
    loss = max(-a * r, -a * min(max(r, 1 - low), 1 + high))
    if dual is not None and a < 0:
        loss = min(loss, -a * dual)
    return loss


def naive_aggregate(values, mask, mode, max_len):
    """Loops over the whole mini-batch: the definition the partial sums must reproduce."""
    seqs = []
    for vr, mr in zip(values, mask, strict=True):
        seqs.append((sum(v for v, m in zip(vr, mr, strict=True) if m), sum(mr)))
    seqs = [(s, n) for s, n in seqs if n > 0]
    tokens = sum(n for _, n in seqs)
    if mode == "token-mean":
        return sum(s for s, _ in seqs) / tokens
    if mode == "seq-mean-token-sum":
        return sum(s for s, _ in seqs) / len(seqs)
    if mode == "seq-mean-token-mean":
        return sum(s / n for s, n in seqs) / len(seqs)
    return sum(s for s, _ in seqs) / (len(seqs) * max_len)


def norm_of(mask, max_len=L):
    return LossNorm.from_counts(LossNorm.counts([mask]), max_len)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("dual", [None, 3.0])
def test_policy_loss_matches_naive(mode, dual):
    x = random_inputs()
    cfg = AlgoConfig(loss_agg_mode=mode, clip_ratio_low=0.2, clip_ratio_high=0.28, dual_clip=dual,
                     kl_coef=0.1, entropy_coef=0.01)
    loss, metrics = policy_loss(x["logprobs"], x["old"], x["adv"], x["mask"], norm_of(x["mask"]), cfg,
                              is_weights=x["is_w"], entropy=x["entropy"], ref_logprobs=x["ref"])
    n = x["mask"].shape[0]
    pg = [[x["is_w"][i, t].item() * naive_token_loss(x["logprobs"][i, t].item(), x["old"][i, t].item(),
                                                      x["adv"][i, t].item(), 0.2, 0.28, dual)
           for t in range(L)] for i in range(n)]
    kl = [[math.exp(x["ref"][i, t] - x["logprobs"][i, t]) - 1 - (x["ref"][i, t] - x["logprobs"][i, t]).item()
           for t in range(L)] for i in range(n)]
    mask = x["mask"].tolist()
    want = (naive_aggregate(pg, mask, mode, L) + 0.1 * naive_aggregate(kl, mask, mode, L)
            - 0.01 * naive_aggregate(x["entropy"].tolist(), mask, mode, L))
    assert float(loss) == pytest.approx(want, rel=1e-10)
    assert float(metrics["pg_loss"]) == pytest.approx(naive_aggregate(pg, mask, mode, L), rel=1e-10)


def test_metrics_match_naive():
    x = random_inputs(seed=3)
    cfg = AlgoConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, dual_clip=3.0)
    _, m = policy_loss(x["logprobs"], x["old"], x["adv"], x["mask"], norm_of(x["mask"]), cfg)
    low = high = dual = kl = rsum = 0.0
    rmax, tokens = 0.0, 0
    for i in range(x["mask"].shape[0]):
        for t in range(L):
            if not x["mask"][i, t]:
                continue
            lr = (x["logprobs"][i, t] - x["old"][i, t]).item()
            r, a = math.exp(lr), x["adv"][i, t].item()
            tokens += 1
            low += a < 0 and r < 0.8
            high += a > 0 and r > 1.28
            dual += a < 0 and r > 3.0
            kl += r - 1 - lr
            rsum += r
            rmax = max(rmax, r)
    assert float(m["clip_frac_low"]) == pytest.approx(low / tokens)
    assert float(m["clip_frac_high"]) == pytest.approx(high / tokens)
    assert float(m["dual_clip_frac"]) == pytest.approx(dual / tokens)
    assert float(m["approx_kl"]) == pytest.approx(kl / tokens)
    assert float(m["ratio_mean"]) == pytest.approx(rsum / tokens)
    assert float(m["ratio_max"]) == pytest.approx(rmax)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_partial_sums_add_up_over_micro_batches(mode):
    x = random_inputs(seed=1, n=9)
    cfg = AlgoConfig(loss_agg_mode=mode)
    norm = norm_of(x["mask"])
    full, full_m = policy_loss(x["logprobs"], x["old"], x["adv"], x["mask"], norm, cfg)
    parts = [policy_loss(x["logprobs"][s], x["old"][s], x["adv"][s], x["mask"][s], norm, cfg)
             for s in (slice(0, 2), slice(2, 3), slice(3, 9))]
    assert float(sum(p[0] for p in parts)) == pytest.approx(float(full), rel=1e-12)
    reduced = reduce_metrics(p[1] for p in parts)
    for key, value in full_m.items():
        assert float(reduced[key]) == pytest.approx(float(value), rel=1e-12, abs=1e-15), key


def test_aggregation_normalizers_by_hand():
    values = torch.tensor([[1.0, 2.0, 9.0], [5.0, 5.0, 5.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])  # lens 2, 0 (empty), 3
    norm = LossNorm.from_counts(LossNorm.counts([mask]), max_len=4)
    assert (norm.tokens, norm.seqs) == (5.0, 2.0)
    assert float(aggregate(values, mask, "token-mean", norm)) == pytest.approx(6 / 5)
    assert float(aggregate(values, mask, "seq-mean-token-sum", norm)) == pytest.approx(6 / 2)
    assert float(aggregate(values, mask, "seq-mean-token-mean", norm)) == pytest.approx((3 / 2 + 3 / 3) / 2)
    assert float(aggregate(values, mask, "seq-mean-token-sum-norm", norm)) == pytest.approx(6 / (2 * 4))
    with pytest.raises(ValueError, match="token-avg"):
        aggregate(values, mask, "token-avg", norm)


def test_all_masked_batch_gives_zero_loss():
    norm = LossNorm.from_counts(torch.zeros(2), max_len=4)
    loss = aggregate(torch.ones(2, 3), torch.zeros(2, 3), "token-mean", norm)
    assert float(loss) == 0.0


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_gradcheck(mode):
    x = random_inputs(seed=2, n=5)
    x["logprobs"][3] = x["old"][3] + torch.tensor([1.1, -1.1, 0.05, -0.05, 0.7, -0.7])  # away from the kinks
    cfg = AlgoConfig(loss_agg_mode=mode, clip_ratio_high=0.28, dual_clip=2.5, kl_coef=0.2, entropy_coef=0.05)
    norm = norm_of(x["mask"])

    def f(lp, ent):
        return policy_loss(lp, x["old"], x["adv"], x["mask"], norm, cfg, is_weights=x["is_w"], entropy=ent,
                         ref_logprobs=x["ref"])[0]

    inputs = (x["logprobs"].clone().requires_grad_(), x["entropy"].clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators_naive_and_grad(est):
    lp = torch.tensor([-1.0, -2.0, -0.1], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -1.0, -0.1], dtype=torch.float64)
    got = kl_penalty(lp, ref, est).detach()
    for i in range(3):
        d = (lp[i] - ref[i]).item()
        want = {"k1": d, "k2": d * d / 2, "k3": math.exp(-d) - 1 + d}[est]
        assert float(got[i]) == pytest.approx(want)
    assert torch.autograd.gradcheck(lambda a: kl_penalty(a, ref, est), (lp,))
    if est == "k3":
        assert (got >= 0).all()


def test_missing_inputs_are_named():
    x = random_inputs()
    norm = norm_of(x["mask"])
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(x["logprobs"], x["old"], x["adv"], x["mask"], norm, AlgoConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(x["logprobs"], x["old"], x["adv"], x["mask"], norm, AlgoConfig(entropy_coef=0.1))


def test_huge_log_ratio_stays_finite():
    lp = torch.tensor([[60.0, -60.0]], dtype=torch.float64, requires_grad=True)
    zeros, mask = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    cfg = AlgoConfig(dual_clip=3.0, kl_coef=1.0)
    adv = torch.tensor([[1.0, -1.0]])
    loss, m = policy_loss(lp, zeros, adv, mask, norm_of(mask, 2), cfg, ref_logprobs=zeros)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert float(m["ratio_max"]) == pytest.approx(math.exp(20))


def naive_gspo(lp, old, adv, mask, low, high):
    """GSPO as the paper writes it: one ratio per sequence, s = (pi / pi_old)^(1/|y|), mean over sequences."""
    terms = []
    for i in range(mask.shape[0]):
        n = int(mask[i].sum())
        if n == 0:
            continue
        s = torch.exp((lp[i, :n] - old[i, :n]).sum() / n)
        a = adv[i, 0]
        terms.append(torch.maximum(-a * s, -a * s.clamp(1 - low, 1 + high)))
    return torch.stack(terms).mean()


def test_gspo_value_and_gradient_are_the_papers():
    x = random_inputs(seed=4)
    x["adv"][:, :] = x["adv"][:, :1]  # GSPO's advantage is one per sequence (also off the mask: unused)
    cfg = AlgoConfig(loss="gspo", clip_ratio_low=0.05, clip_ratio_high=0.08)
    lp = x["logprobs"].clone().requires_grad_()
    loss, m = policy_loss(lp, x["old"], x["adv"], x["mask"], norm_of(x["mask"]), cfg)
    loss.backward()
    lp_ref = x["logprobs"].clone().requires_grad_()
    want = naive_gspo(lp_ref, x["old"], x["adv"], x["mask"], 0.05, 0.08)
    want.backward()
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-10)
    torch.testing.assert_close(lp.grad, lp_ref.grad * x["mask"], rtol=1e-10, atol=1e-12)
    assert float(m["clip_frac_low"]) + float(m["clip_frac_high"]) > 0  # some sequences were clipped whole
    assert lp.grad.abs().sum() > 0


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    """PPO-clip drops a token whose ratio left the range in the advantage's direction; CISPO weights it by
    the clipped ratio instead."""
    lp = torch.tensor([[0.5, 0.0, -0.5]], dtype=torch.float64, requires_grad=True)  # ratios e^0.5, 1, e^-0.5
    old, mask = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    norm = norm_of(mask, 3)
    grads = {}
    for loss_name in ("grpo", "cispo"):
        cfg = AlgoConfig(loss=loss_name, clip_ratio_low=0.2, clip_ratio_high=0.28)
        lp.grad = None
        loss, m = policy_loss(lp, old, adv, mask, norm, cfg)
        loss.backward()
        grads[loss_name] = lp.grad.clone()
    assert grads["grpo"][0, 0] == 0 and grads["grpo"][0, 2] == 0  # both clipped out
    # CISPO: d/dlp of -sg(clip(r)) A lp / tokens = -clip(r) A / 3
    want = [-1.28 / 3, -1.0 / 3, 0.8 / 3]  # e^0.5 > 1.28 and e^-0.5 < 0.8: both weights clipped
    assert grads["cispo"][0].tolist() == pytest.approx(want)
    assert float(m["clip_frac_high"]) == pytest.approx(1 / 3) and float(m["clip_frac_low"]) == pytest.approx(1 / 3)


def test_cispo_matches_naive():
    x = random_inputs(seed=5)
    cfg = AlgoConfig(loss="cispo", clip_ratio_high=0.28)
    lp = x["logprobs"].clone().requires_grad_()
    loss, _ = policy_loss(lp, x["old"], x["adv"], x["mask"], norm_of(x["mask"]), cfg, is_weights=x["is_w"])
    loss.backward()
    tokens = float(x["mask"].sum())
    want, grad = 0.0, torch.zeros_like(lp)
    for i in range(x["mask"].shape[0]):
        for t in range(L):
            if x["mask"][i, t]:
                log_r = min(max((x["logprobs"][i, t] - x["old"][i, t]).item(), -20), 20)
                w = min(math.exp(log_r), 1.28)  # no lower bound
                coef = -x["is_w"][i, t].item() * w * x["adv"][i, t].item() / tokens
                want += coef * x["logprobs"][i, t].item()
                grad[i, t] = coef
    assert float(loss.detach()) == pytest.approx(want, rel=1e-10)
    torch.testing.assert_close(lp.grad, grad, rtol=1e-10, atol=1e-12)
