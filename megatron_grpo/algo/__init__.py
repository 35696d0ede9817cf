"""GRPO algorithm math and batching: pure functions on tensors, no Megatron, no process groups.

The algorithm, per rollout step (one call per stage):

1. ``dynamic_sampling`` (optional, DAPO): keep groups whose rewards differ until B prompts are kept.
2. the trainer computes ``old_logprobs`` (pi_old) of the responses unless ``is_on_policy`` says the
   update's own log-probs serve, and ``ref_logprobs`` only if KL is on.
3. ``prepare_train_batch``: reward = outcome (+ DAPO overlong penalty, - KL if in reward); advantage
   (registered estimator, e.g. ``A_i = w * (r_i - mean_G) / (std_G + eps)``) broadcast over the response
   tokens; loss mask (minus truncated responses with overlong filtering); rollout IS weights
   ``min(pi_old / mu, 2)`` per token (``rollout_correction``).
4. for each PPO epoch and mini-batch of whole groups (``mini_batches``): count the GLOBAL normalisers
   (``LossNorm.counts`` + all-reduce SUM over DP), pack the rank's sequences (``pack_micro_batches``),
   and per micro-batch backprop ``policy_loss`` = IS-weighted registered loss (PPO-clip, GSPO, CISPO;
   + KL, - entropy), SUMMED over micro-batches and ranks; then one optimizer step.

Deviations from the papers (GRPO arXiv 2402.03300, DAPO 2503.14476, Dr.GRPO 2503.20783), on purpose:

* Reference run (verl): token-mean aggregation (DAPO's token-level loss, not GRPO's per-sequence
  mean), no KL term and so no reference model (GRPO uses k3 KL with beta 0.04; ``kl_coef`` turns it on,
  in the loss or in the reward), one optimizer step
  per rollout (pi = pi_old at the step, so clipping is inert and the loss is -A * IS-weighted log pi).
* The std of the group is the unbiased one (torch default, as verl) and eps is added to it.
* Normalisers are counted over the whole mini-batch on all DP ranks (not per micro-batch), so
  micro-batching and DP never change the gradient. Sequences without any valid token (empty or
  masked out) count neither as tokens nor as sequences.
* seq-mean-token-sum-norm (Dr.GRPO) divides the token sum by (sequences x max response length), the
  constant normaliser of verl; the Dr.GRPO paper also keeps the 1/G group mean, which is the same.
* Rollout importance sampling (truncated IS of pi_old / mu, Yao et al. 2025) is not in any of the
  papers; it corrects vLLM-vs-trainer numerics. Masking mode bounds the weight from above only.
* Dynamic sampling drops groups whose *raw outcome rewards* are all equal (DAPO uses accuracy; same
  for 0/1 rewards) and, after ``dynamic_sampling_max_tries`` rounds, trains on fewer groups with a
  warning instead of generating forever.
* Log ratios are clamped to +-20 before ``exp`` in the PPO ratio, KL and IS weights (overflow guard;
  verl clamps the k3 value to +-10 instead). An optional dual clip (Ye et al. 2020) is available.
"""

from megatron_grpo.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    broadcast_to_tokens,
    group_advantages,
    register_advantage,
)
from megatron_grpo.algo.batching import (
    PackPlan,
    micro_batch_cost,
    mini_batches,
    pack_micro_batches,
    padding_fraction,
)
from megatron_grpo.algo.correction import is_on_policy, rollout_correction, rollout_is_weights
from megatron_grpo.algo.dapo import (
    DynamicSamplingResult,
    dynamic_sampling,
    groups_with_signal,
    overlong_penalty,
)
from megatron_grpo.algo.loss import LossNorm, aggregate, kl_penalty, policy_loss, reduce_metrics
from megatron_grpo.algo.losses import POLICY_LOSSES, PolicyTerms, get_loss, register_loss
from megatron_grpo.algo.prepare import prepare_train_batch, shaped_rewards
from megatron_grpo.algo.types import RolloutBatch, TrainBatch, gather_response, response_mask

__all__ = [
    "ADVANTAGE_ESTIMATORS", "POLICY_LOSSES", "DynamicSamplingResult", "LossNorm", "PackPlan", "PolicyTerms",
    "RolloutBatch", "TrainBatch", "aggregate", "broadcast_to_tokens", "dynamic_sampling", "gather_response",
    "get_loss", "group_advantages", "groups_with_signal", "is_on_policy", "kl_penalty", "micro_batch_cost",
    "mini_batches", "overlong_penalty", "pack_micro_batches", "padding_fraction", "policy_loss",
    "prepare_train_batch", "reduce_metrics", "register_advantage", "register_loss", "response_mask",
    "rollout_correction", "rollout_is_weights", "shaped_rewards",
]
