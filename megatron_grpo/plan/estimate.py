"""Dry-run planner: parallel layout, per-GPU memory and step time of a config on N nodes x G GPUs.

``plan(cfg, arch, nodes, gpus_per_node)`` is pure arithmetic over the config and the architecture (no
torch, no GPU); ``format_plan`` renders it; ``add_plan_arguments``/``run_plan`` are the CLI. Every
formula, its source and its blind spots are in docs/scaling.md; the numbers are estimates to choose a
layout with, not guarantees. Sizes are in GiB (2**30 bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, replace

from megatron_grpo.algo.correction import is_on_policy
from megatron_grpo.config import Config, ConfigError, check_world, load_config
from megatron_grpo.families import ModelArch, load_arch, padded_vocab_size, param_counts

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
PEAK_TFLOPS = {"fp32": 494.7, "bf16": 989.4, "fp16": 989.4}
"""Dense H100 SXM tensor-core peak per GPU; fp32 assumes TF32 matmuls (torch allow_tf32)."""
HBM_BYTES_PER_S = 3.35e12
"""H100 SXM memory bandwidth: a decode step reads every weight of the engine once."""
TRANSFER_BYTES_PER_S = 25e9
"""Disaggregated refit: trainer rank 0 broadcasts every bucket to the engines once, over one 200 Gb/s
InfiniBand link (the slowest hop when the engines are on other nodes)."""


@dataclass(frozen=True)
class Assumptions:
    """What the estimate cannot read from the config; each is a CLI flag."""

    mfu: float = 0.35
    """Training: share of peak FLOPs achieved on the FLOPs executed (recompute included)."""
    gen_mfu: float = 0.10
    """Generation: decoding is memory-bound, so its FLOPs utilisation is low."""
    peak_tflops: float | None = None
    """Per GPU; ``None`` = PEAK_TFLOPS of the policy dtype."""
    reserve_gb: float = 2.0
    """Per GPU, never available: CUDA context, NCCL buffers, allocator fragmentation."""
    mean_prompt_tokens: int | None = None
    """``None`` = min(256, rollout.max_prompt_length)."""
    mean_response_tokens: int | None = None
    """``None`` = half of rollout.train.max_response_length."""
    engines: int | None = None
    """Colocated rollout engines generating; ``None`` = world / rollout.tensor_parallel (one per TP group
    of GPUs). Disaggregated placement takes ``rollout.num_engines`` instead."""


@dataclass(frozen=True)
class Layout:
    world: int  # the trainer's GPUs
    tp: int
    pp: int
    dp: int
    rollout_tp: int
    engines: int
    engine_gpus: int = 0  # disaggregated: GPUs that only generate (0: the engines share the trainer's)
    ep: int = 1  # expert parallel (MoE): routed experts spread over ep GPUs
    etp: int = 1  # tensor parallel inside each expert
    edp: int = 1  # expert data parallel: world / (etp x ep x pp), what the experts' optimizer state shards over


@dataclass(frozen=True)
class TrainMemory:
    """Per-GPU bytes while the trainer runs: static memory of the largest stage (the last), activations of
    the first stage (the most in flight) and of the last (which also holds the logits)."""

    params: float
    grads: float
    optimizer: float
    activations: float  # first stage, stored for backward: all layers in flight (full recompute: inputs only)
    backward: float  # the layer under backward: re-created activations (full recompute) + MLP grad temporaries
    logits: float  # logits and their working copies during the loss of one micro-batch (last stage)
    last_activations: float  # the last stage's stored activations (= activations without PP)

    @property
    def static(self) -> float:
        return self.params + self.grads + self.optimizer

    @property
    def peak(self) -> float:
        # The logits live during the loss and are freed before the first layer's backward.
        first = self.activations + self.backward
        last = self.last_activations + max(self.logits, self.backward)
        return self.static + max(first, last)


@dataclass(frozen=True)
class RolloutMemory:
    """Per-GPU bytes while the engines generate."""

    budget: float  # rollout.gpu_memory_utilization x GPU memory: all vLLM may take
    weights: float
    kv_cache: float
    kv_bytes_per_token: float
    trainer_resident: float  # what the trainer keeps on the GPU meanwhile
    seq_tokens: int  # max prompt + max response of a training rollout
    seqs_per_engine: int
    refit: float  # during the refit: the trainer's weights, the engine's weights and two buckets
    host_offload: float  # host memory the offloaded trainer state takes, per GPU

    @property
    def kv_tokens(self) -> int:
        return max(int(self.kv_cache // self.kv_bytes_per_token), 0)


@dataclass(frozen=True)
class Throughput:
    train_tokens: float  # per step, prompt + response, all sequences
    gen_tokens: float  # per step, sampled tokens
    train_flops: float
    gen_flops: float
    train_s: float
    gen_s: float
    refit_bytes: float  # one full copy of the weights in the engine dtype, streamed each step
    refit_buckets: int
    refit_s: float = 0.0  # disaggregated: the broadcast to the engines (colocated: not modelled, ~0.2 s)
    staleness: int = 0  # rollout.max_staleness: 1 overlaps generation with the previous update

    @property
    def on_policy_s(self) -> float:
        return self.train_s + self.gen_s + self.refit_s

    @property
    def off_policy_s(self) -> float:
        """One step off-policy: step k+1 generates while step k trains; the refit waits for both."""
        return max(self.train_s, self.gen_s) + self.refit_s

    @property
    def step_s(self) -> float:
        return self.off_policy_s if self.staleness else self.on_policy_s


@dataclass(frozen=True)
class Plan:
    layout: Layout
    gpu_mem: float
    usable: float  # gpu_mem - reserve
    params_total: int
    params_per_gpu: int
    train: TrainMemory
    rollout: RolloutMemory
    throughput: Throughput
    advice: tuple[str, ...] = ()
    params_active: int = 0  # MoE: parameters one token passes through (0 for a dense model)
    reference_host: float = 0.0  # KL: the frozen reference's weights, per GPU, in host memory (model/reference.py)

    @property
    def fits_train(self) -> bool:
        return self.train.peak <= self.usable

    @property
    def fits_rollout(self) -> bool:
        r = self.rollout
        return r.trainer_resident + r.budget <= self.usable and r.kv_tokens >= r.seq_tokens and r.refit <= self.usable

    @property
    def fits(self) -> bool:
        return self.fits_train and self.fits_rollout


# ---- model arithmetic ----------------------------------------------------------------------------


def layer_params(arch: ModelArch, tp: int = 1, ep: int = 1, etp: int | None = None) -> int:
    """One decoder layer on one GPU: q,k,v,o and a dense MLP's gate,up,down are split over TP, the norms
    (and an MoE router) are not; routed experts are spread over EP (``num_experts / ep`` each) and each
    expert split over expert-TP (``etp``, default ``tp``)."""
    h, d = arch.hidden_size, arch.head_dim
    attention = 2 * arch.num_attention_heads * d * h + 2 * arch.num_query_groups * d * h
    norms = 2 * h + 2 * d * arch.qk_layernorm
    if not arch.is_moe:
        return -(-(attention + 3 * arch.ffn_hidden_size * h) // tp) + norms
    return -(-attention // tp) + norms + arch.num_experts * h + _layer_experts(arch, ep, etp or tp)


def _layer_experts(arch: ModelArch, ep: int, etp: int) -> int:
    """One layer's routed-expert parameters on one GPU: its num_experts / ep experts, each split over etp."""
    return arch.num_experts // ep * -(-param_counts(arch).layer_expert // etp)


def stage_expert_params(arch: ModelArch, tp: int, pp: int, ep: int, etp: int) -> int:
    """Of ``stage_params``, the routed experts' (the distributed optimizer shards them over the
    expert-data-parallel group, everything else over the data-parallel group)."""
    return arch.num_layers // pp * _layer_experts(arch, ep, etp) if arch.is_moe else 0


def total_params(arch: ModelArch) -> int:
    """All HF parameters (tied embeddings counted once)."""
    return param_counts(arch).total(arch)


def stage_params(arch: ModelArch, tp: int, pp: int, vocab: int, ep: int = 1, etp: int | None = None) -> int:
    """Parameters of the largest pipeline stage on one GPU: the last one (layers, final norm, output
    layer), which with PP > 1 also holds the tied embedding's copy."""
    copies = 2 if pp == 1 and not arch.tie_word_embeddings else 1
    embed = -(-vocab * arch.hidden_size // tp)
    return arch.num_layers // pp * layer_params(arch, tp, ep, etp) + arch.hidden_size + copies * embed


def mlp_width(arch: ModelArch) -> int:
    """Per token, one layer: elements of the MLP's intermediate activations (gate/up output 2f and the
    down-projection input f). A token routed to k experts has them k times, plus its permuted copies in
    and out of the experts (2k h: the all-to-all dispatcher's buffers)."""
    if not arch.is_moe:
        return 3 * arch.ffn_hidden_size
    return arch.moe_topk * (3 * arch.moe_ffn_hidden_size + 2 * arch.hidden_size)


def layer_activation_elems(arch: ModelArch, tp: int, sp: bool) -> tuple[float, float]:
    """Per token, one layer, one GPU: (elements saved for backward, elements of the layer input).

    Saved: both norm inputs and the two linear inputs they feed (4h; TP-replicated unless sequence
    parallel), q/k-norm inputs ((a+g)d), post-RoPE q,k,v and the flash-attention output ((2a+2g)d),
    the MLP's intermediates (``mlp_width``); no dropout, no s^2 attention scores.
    """
    h, d = arch.hidden_size, arch.head_dim
    heads = 3 * (arch.num_attention_heads + arch.num_query_groups) * d + mlp_width(arch)
    replicated = 4 * h
    if sp:
        return (replicated + heads) / tp, h / tp
    return replicated + heads / tp, h


def matmul_params(arch: ModelArch) -> int:
    """Parameters that take part in a matmul per token (the embedding lookup does not, the output layer
    does; of the routed experts only the top-k)."""
    counts = param_counts(arch)
    return counts.active(arch) - counts.embedding - counts.final_norm + arch.vocab_size * arch.hidden_size


# ---- the plan ------------------------------------------------------------------------------------


def plan(cfg: Config, arch: ModelArch, nodes: int, gpus_per_node: int, gpu_mem_gb: float = 80.0,
         assume: Assumptions = Assumptions()) -> Plan:
    """Estimate layout, memory and throughput; ``advice`` says which knob to turn when it does not fit."""
    base = _plan(cfg, arch, nodes, gpus_per_node, gpu_mem_gb, assume)
    if base.fits and _kv_waves(base.rollout) <= 1:
        return base
    return replace(base, advice=tuple(_advice(cfg, arch, base, nodes, gpus_per_node, gpu_mem_gb, assume)))


def _plan(cfg: Config, arch: ModelArch, nodes: int, gpus_per_node: int, gpu_mem_gb: float,
          assume: Assumptions) -> Plan:
    layout = _layout(cfg, arch, nodes * gpus_per_node, assume.engines)
    vocab = padded_vocab_size(arch.vocab_size, cfg.model.make_vocab_size_divisible_by, layout.tp)
    per_gpu = stage_params(arch, layout.tp, layout.pp, vocab, layout.ep, layout.etp)
    train = _train_memory(cfg, arch, layout, per_gpu, vocab)
    rollout = _rollout_memory(cfg, arch, layout, train, gpu_mem_gb * GIB, assume)
    return Plan(layout=layout, gpu_mem=gpu_mem_gb * GIB, usable=(gpu_mem_gb - assume.reserve_gb) * GIB,
                params_total=total_params(arch), params_per_gpu=per_gpu, train=train, rollout=rollout,
                params_active=param_counts(arch).active(arch) if arch.is_moe else 0,
                throughput=_throughput(cfg, arch, layout, assume),
                # the policy's shard of every weight, in its dtype; swapped in one tensor at a time
                reference_host=train.params if cfg.algo.kl_coef > 0 else 0.0)


def _layout(cfg: Config, arch: ModelArch, world: int, engines: int | None) -> Layout:
    tp, pp, rtp = cfg.parallel.tensor, cfg.parallel.pipeline, cfg.rollout.tensor_parallel
    disaggregated = cfg.rollout.placement == "disaggregated"
    engine_gpus = cfg.rollout.num_engines * rtp if disaggregated else 0
    if disaggregated:
        if engines is not None:
            raise ConfigError("engines: disaggregated placement takes rollout.num_engines")
        if engine_gpus >= world:
            raise ConfigError(f"rollout.num_engines: {cfg.rollout.num_engines} engines of TP {rtp} take "
                              f"{engine_gpus} of the job's {world} GPUs, leaving none to train")
        engines = cfg.rollout.num_engines
    world -= engine_gpus  # the trainer's GPUs
    check_world(cfg, world, arch.num_attention_heads, arch.num_query_groups, arch.num_layers, arch.num_experts)
    if not disaggregated:
        if world % rtp:
            raise ConfigError(f"rollout.tensor_parallel: {rtp} does not divide the world size {world}")
        if engines is not None and not 1 <= engines <= world // rtp:
            raise ConfigError(f"engines: {engines} not in [1, world / rollout.tensor_parallel = {world // rtp}]")
    ep, etp = cfg.parallel.expert, cfg.parallel.expert_tensor_size
    return Layout(world=world, tp=tp, pp=pp, dp=world // (tp * pp), rollout_tp=rtp, engines=engines or world // rtp,
                  engine_gpus=engine_gpus, ep=ep, etp=etp, edp=world // (etp * ep * pp))


def _train_memory(cfg: Config, arch: ModelArch, layout: Layout, per_gpu: int, vocab: int) -> TrainMemory:
    width = DTYPE_BYTES[cfg.model.dtype]
    # Megatron keeps fp32 main gradients (grad_reduce_in_fp32) and, for 16-bit params, fp32 master
    # weights; Adam adds two fp32 moments. The distributed optimizer shards master + moments over DP.
    master = 0 if cfg.model.dtype == "fp32" else 4
    experts = stage_expert_params(arch, layout.tp, layout.pp, layout.ep, layout.etp)
    dense_shards, expert_shards = (layout.dp, layout.edp) if cfg.parallel.distributed_optimizer else (1, 1)
    per_layer, layer_in = layer_activation_elems(arch, layout.tp, cfg.parallel.sequence_parallel)
    tokens = cfg.algo.micro_batch_tokens
    # 1F1B: the first stage holds pp micro-batches x L/pp layers = L layers (Korthikanti et al. 2022).
    live_layers = arch.num_layers
    if cfg.parallel.virtual_pipeline:
        live_layers *= 1 + (layout.pp - 1) / (layout.pp * cfg.parallel.virtual_pipeline)
    full = cfg.model.recompute == "full"
    per_stored = (layer_in if full else per_layer) * tokens * width
    # backward of one layer: its activations again (full recompute) and the gradients of the MLP's
    # gate/up output and of its SwiGLU output (3f) beside them
    mlp_grads = mlp_width(arch) / layout.tp * tokens * width
    return TrainMemory(
        params=per_gpu * width,
        grads=per_gpu * 4,
        optimizer=((per_gpu - experts) / dense_shards + experts / expert_shards) * (master + 8),
        activations=live_layers * per_stored,
        backward=(per_layer * tokens * width if full else 0.0) + mlp_grads,
        logits=tokens * vocab / layout.tp * _logit_bytes(width, tokens // _seq_tokens(cfg) > 1),
        last_activations=arch.num_layers // layout.pp * per_stored,  # 1F1B: one micro-batch in flight
    )


def _engine_dtype(cfg: Config) -> str:
    """The plan is for GPUs, where ``rollout.dtype: auto`` means bf16."""
    return "bf16" if cfg.rollout.dtype == "auto" else cfg.rollout.dtype


def _seq_tokens(cfg: Config) -> int:
    return cfg.rollout.max_prompt_length + cfg.rollout.train.max_response_length


def _logit_bytes(width: int, several_sequences: bool) -> int:
    """Bytes per logit live at once during the loss of a micro-batch (measured by ``plan --trace``).

    GPTModel returns ``[s, b, V]`` logits transposed to ``[b, s, V]`` and made contiguous, a copy whenever
    the micro-batch holds more than one sequence; the output layer's backward copies the gradient back the
    same way. fp32 logits are then scaled in place and become the softmax and its gradient inside
    ``vocab_parallel_cross_entropy``: 2w with several sequences, w with one. 16-bit logits get an fp32
    working copy, which outlives the copy: w + 4 either way."""
    if width == 4:
        return 2 * width if several_sequences else width
    return width + 4


def _rollout_memory(cfg: Config, arch: ModelArch, layout: Layout, train: TrainMemory, gpu_mem: float,
                    assume: Assumptions) -> RolloutMemory:
    width = DTYPE_BYTES[_engine_dtype(cfg)]
    budget = cfg.rollout.gpu_memory_utilization * gpu_mem
    weights = total_params(arch) * width / layout.rollout_tp
    kv_heads = max(arch.num_query_groups // layout.rollout_tp, 1)  # vLLM replicates KV heads past TP = g
    # The loop (trainer/colocate.py): with offload_trainer the gradient buffers are freed, the optimizer
    # state and, with the distributed optimizer, the weights wait in host memory while vLLM generates.
    colocated = cfg.rollout.shares_gpus
    offload = colocated and cfg.rollout.offload_trainer
    weights_stay = not cfg.parallel.distributed_optimizer  # no contiguous weight buffer to move
    resident = (train.params if weights_stay else 0.0) if offload else train.static
    host = (train.optimizer + (0.0 if weights_stay else train.params)) if offload else 0.0
    # Disaggregated, this is an engine GPU: no trainer state, and the refit adds only the bucket in
    # flight (the trainer's GPUs hold their static state plus that bucket, within their training peak).
    trainer_side = train.params + (0.0 if offload else train.grads + train.optimizer) if colocated else 0.0
    if not colocated:
        resident, host = 0.0, 0.0
    seqs = cfg.data.batch_prompts * cfg.rollout.train.n
    return RolloutMemory(
        budget=budget, weights=weights, kv_cache=budget - weights,
        kv_bytes_per_token=2 * arch.num_layers * kv_heads * arch.head_dim * width,
        trainer_resident=resident,
        seq_tokens=_seq_tokens(cfg),
        seqs_per_engine=-(-seqs // layout.engines),
        refit=trainer_side + weights + min(2 * (cfg.rollout.refit_bucket_mb << 20), weights),  # at most the model
        host_offload=host,
    )


def _throughput(cfg: Config, arch: ModelArch, layout: Layout, assume: Assumptions) -> Throughput:
    prompt = assume.mean_prompt_tokens or min(256, cfg.rollout.max_prompt_length)
    response = assume.mean_response_tokens or cfg.rollout.train.max_response_length // 2
    seqs = cfg.data.batch_prompts * cfg.rollout.train.n
    n_mm = matmul_params(arch)
    attn = arch.num_layers * arch.num_attention_heads * arch.head_dim  # x 4 x context = attention FLOPs/token
    seq = prompt + response
    # Forward = 2 N + 4 L a d c per token (c = mean causal context = seq / 2); backward = 2 x forward;
    # full recompute repeats the forward; each PPO epoch does all that again. Once per step, a forward
    # gives old log-probs when off-policy, another the reference's with a KL term.
    passes = (3 + (cfg.model.recompute == "full")) * cfg.algo.ppo_epochs + (
        not is_on_policy(cfg.algo, cfg.data.batch_prompts)) + (cfg.algo.kl_coef > 0)
    train_flops = seqs * seq * passes * (2 * n_mm + 4 * attn * seq / 2)
    prefill = prompt * (2 * n_mm + 4 * attn * prompt / 2)
    gen_flops = seqs * (prefill + response * (2 * n_mm + 4 * attn * (prompt + response / 2)))
    peak = (assume.peak_tflops or PEAK_TFLOPS[cfg.model.dtype]) * 1e12  # per GPU
    refit = total_params(arch) * DTYPE_BYTES[_engine_dtype(cfg)]
    # The longest response decodes one token per step whatever the GPU count: a floor on generation.
    tail = cfg.rollout.train.max_response_length * refit / layout.rollout_tp / HBM_BYTES_PER_S
    return Throughput(
        train_tokens=seqs * seq, gen_tokens=seqs * response, train_flops=train_flops, gen_flops=gen_flops,
        train_s=train_flops / (peak * layout.world * assume.mfu),
        gen_s=max(gen_flops / (peak * layout.engines * layout.rollout_tp * assume.gen_mfu), tail),
        refit_bytes=refit, refit_buckets=math.ceil(refit / (cfg.rollout.refit_bucket_mb * 2**20)),
        refit_s=refit / TRANSFER_BYTES_PER_S if layout.engine_gpus else 0.0, staleness=cfg.rollout.max_staleness,
    )


def _kv_waves(r: RolloutMemory) -> int:
    """Rounds of full-length sequences an engine needs when its KV cache cannot hold them all at once."""
    fit = r.kv_tokens // r.seq_tokens
    return math.ceil(r.seqs_per_engine / fit) if fit else 0


# ---- advice --------------------------------------------------------------------------------------


def _advice(cfg: Config, arch: ModelArch, p: Plan, nodes: int, gpus: int, mem_gb: float,
            assume: Assumptions) -> list[str]:
    out: list[str] = []

    def trial(c: Config, n: int = nodes) -> Plan:
        return _plan(c, arch, n, gpus, mem_gb, assume)

    if not p.fits_train:
        out += _train_advice(cfg, p, trial)
    if not p.fits_rollout:
        out += _rollout_advice(cfg, p)
    if p.fits and _kv_waves(p.rollout) > 1:
        out.append(f"KV cache holds {p.rollout.kv_tokens // p.rollout.seq_tokens} full-length sequences per "
                   f"engine of {p.rollout.seqs_per_engine}: generation runs in waves (raise "
                   "rollout.gpu_memory_utilization or rollout.tensor_parallel)")
    if not p.fits:
        layout = _fitting_layout(cfg, arch, nodes, gpus, trial)
        out.append(layout or f"no TP x PP layout fits on up to {8 * nodes} nodes: use model.dtype=bf16")
    return out


def _train_advice(cfg: Config, p: Plan, trial) -> list[str]:
    out = []
    if cfg.model.recompute != "full":
        alt = trial(_with(cfg, "model", recompute="full"))
        out.append(f"model.recompute=full: training peak {_gib(p.train.peak)} -> {_gib(alt.train.peak)} GiB")
    if cfg.parallel.tensor > 1 and not cfg.parallel.sequence_parallel:
        alt = trial(_with(cfg, "parallel", sequence_parallel=True))
        out.append(f"parallel.sequence_parallel=true: training peak {_gib(alt.train.peak)} GiB")
    seq = cfg.rollout.max_prompt_length + cfg.rollout.train.max_response_length
    budget = cfg.algo.micro_batch_tokens // 2
    while budget >= seq:
        alt = trial(_with(cfg, "algo", micro_batch_tokens=budget))
        if alt.fits_train:
            out.append(f"algo.micro_batch_tokens={budget}: training peak {_gib(alt.train.peak)} GiB (same update: "
                       "the loss is normalised by the global token count)")
            break
        budget //= 2
    return out


def _rollout_advice(cfg: Config, p: Plan) -> list[str]:
    r = p.rollout
    room = (p.usable - r.trainer_resident) / p.gpu_mem
    util = math.floor(room * 20) / 20
    need = (r.weights + r.seq_tokens * r.kv_bytes_per_token) / p.gpu_mem
    out = [f"rollout: trainer keeps {_gib(r.trainer_resident)} GiB on the GPU while vLLM takes "
           f"{_gib(r.budget)} GiB (rollout.gpu_memory_utilization={cfg.rollout.gpu_memory_utilization})"]
    if util >= need:
        kv = _gib(util * p.gpu_mem - r.weights)
        out.append(f"rollout.gpu_memory_utilization={util:.2f} fits ({kv} GiB KV cache)")
    else:
        out.append("free the trainer's memory during generation (rollout.offload_trainer=true) "
                   "or raise parallel.tensor/pipeline so it keeps less")
    return out


def _fitting_layout(cfg: Config, arch: ModelArch, nodes: int, gpus: int, trial) -> str | None:
    """The smallest TP x PP (TP first, within a node) that fits, on this node count or more."""
    for n in (nodes, 2 * nodes, 4 * nodes, 8 * nodes):
        for tp, pp in _candidates(arch, n * gpus, gpus):
            c = _with(cfg, "parallel", tensor=tp, pipeline=pp, virtual_pipeline=None,
                      sequence_parallel=cfg.parallel.sequence_parallel and tp > 1)
            if cfg.rollout.shares_gpus:  # an engine per TP group; disaggregated ones stay as set
                c = _with(c, "rollout", tensor_parallel=max(tp, cfg.rollout.tensor_parallel))
            try:
                alt = trial(c, n)
            except ConfigError:
                continue
            if alt.fits:
                where = "" if n == nodes else f" on {n} nodes"
                return (f"parallel.tensor={tp} parallel.pipeline={pp} rollout.tensor_parallel="
                        f"{alt.layout.rollout_tp}{where}: training peak {_gib(alt.train.peak)} GiB, "
                        f"est. step {alt.throughput.step_s:.0f} s")
    return None


def _candidates(arch: ModelArch, world: int, gpus: int) -> list[tuple[int, int]]:
    heads = math.gcd(arch.num_attention_heads, arch.num_query_groups)
    tps = [t for t in (1, 2, 4, 8) if t <= gpus and heads % t == 0]
    pps = [q for q in range(1, arch.num_layers + 1) if arch.num_layers % q == 0]
    pairs = [(t, q) for t in tps for q in pps if world % (t * q) == 0]
    return sorted(pairs, key=lambda tq: (tq[0] * tq[1], -tq[0]))


def _with(cfg: Config, section: str, **changes) -> Config:
    return replace(cfg, **{section: replace(getattr(cfg, section), **changes)})


# ---- output and CLI ------------------------------------------------------------------------------


def _gib(x: float) -> str:
    return f"{x / GIB:.1f}"


def format_plan(p: Plan) -> str:
    lo, t, r, th = p.layout, p.train, p.rollout, p.throughput
    verdict = "FITS" if p.fits else "DOES NOT FIT"
    engines = (f"{lo.engines} rollout engine(s) of TP {lo.rollout_tp} on {lo.engine_gpus} GPUs of their own"
               if lo.engine_gpus else f"{lo.engines} rollout engine(s) of TP {lo.rollout_tp}")
    gpu = "per engine GPU" if lo.engine_gpus else "per GPU"
    experts = f" (experts: EP {lo.ep} x expert-TP {lo.etp} x expert-DP {lo.edp})" if p.params_active else ""
    active = f", {p.params_active / 1e9:.2f} B active per token" if p.params_active else ""
    lines = [
        f"layout: {'trainer ' if lo.engine_gpus else ''}world {lo.world} = TP {lo.tp} x PP {lo.pp} x DP {lo.dp}"
        f"{experts}; {engines}",
        f"parameters: {p.params_total / 1e9:.2f} B total{active}, {p.params_per_gpu / 1e9:.2f} B on the largest "
        "stage per GPU",
        f"training, per GPU (GiB of {_gib(p.usable)} usable): params {_gib(t.params)}, grads {_gib(t.grads)}, "
        f"optimizer {_gib(t.optimizer)}, activations {_gib(t.activations)}, layer in backward {_gib(t.backward)}, "
        f"logits {_gib(t.logits)} -> peak {_gib(t.peak)}  [{'ok' if p.fits_train else 'OVER'}]"
        + (f"; KL reference {_gib(p.reference_host)} in host memory" if p.reference_host else ""),
        f"generation, {gpu}: vLLM {_gib(r.budget)} (weights {_gib(r.weights)}, KV cache {_gib(r.kv_cache)} = "
        f"{r.kv_tokens} tokens = {r.kv_tokens // r.seq_tokens} x {r.seq_tokens}-token sequences for "
        f"{r.seqs_per_engine} per engine) + trainer {_gib(r.trainer_resident)} (host memory {_gib(r.host_offload)} "
        f"for its offloaded state); during the refit {_gib(r.refit)}  [{'ok' if p.fits_rollout else 'OVER'}]",
        _step_line(th, lo.world + lo.engine_gpus, bool(lo.engine_gpus)),
        f"verdict: {verdict}",
    ]
    lines += [f"  - {a}" for a in p.advice]
    return "\n".join(lines)


def _step_line(th: Throughput, gpus: int, disaggregated: bool) -> str:
    per_gpu = th.train_tokens / th.step_s / gpus
    refit = f"refit {th.refit_bytes / GIB:.1f} GiB in {th.refit_buckets} buckets"
    if not disaggregated:
        return (f"step estimate: generation {th.gen_s:.0f} s + training {th.train_s:.0f} s = {th.step_s:.0f} s "
                f"({th.train_tokens / 1e6:.2f} M tokens, {per_gpu:.0f} tokens/s/GPU); {refit}")
    chosen = "one step off-policy" if th.staleness else "on-policy"
    return (f"step estimate: on-policy generation {th.gen_s:.0f} s + training {th.train_s:.0f} s + refit "
            f"{th.refit_s:.1f} s = {th.on_policy_s:.0f} s; one step off-policy (rollout.max_staleness=1) "
            f"max(generation, training) + refit = {th.off_policy_s:.0f} s ({th.on_policy_s / th.off_policy_s:.2f}x); "
            f"this config: {chosen}, {per_gpu:.0f} tokens/s/GPU over all {gpus} GPUs; {refit}")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    a = Assumptions()
    parser.add_argument("--config", default=None, help="YAML config (default: the embedded tiny CPU config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu-mem-gb", type=float, default=80.0, help="GiB per GPU (default 80: H100)")
    parser.add_argument("--mfu", type=float, default=a.mfu, help=f"training MFU (default {a.mfu})")
    parser.add_argument("--gen-mfu", type=float, default=a.gen_mfu, help=f"generation MFU (default {a.gen_mfu})")
    parser.add_argument("--peak-tflops", type=float, default=None, help="per GPU (default: H100 dense, by dtype)")
    parser.add_argument("--reserve-gb", type=float, default=a.reserve_gb, help="GiB per GPU never usable")
    parser.add_argument("--mean-prompt-tokens", type=int, default=None, help="default min(256, max prompt)")
    parser.add_argument("--mean-response-tokens", type=int, default=None, help="default half the max response")
    parser.add_argument("--trace", action="store_true",
                        help="also run the real train step as ranks of this job on the stand-in accelerator (meta "
                             "tensors, fake process group: no GPU, no memory) and print measured memory beside "
                             "the formula")
    parser.add_argument("--trace-rank", type=int, action="append", default=None,
                        help="rank to trace (repeatable; default: the first and the last)")
    parser.add_argument("--engines", type=int, default=None,
                        help="colocated rollout engines (default world / rollout TP); disaggregated: "
                             "rollout.num_engines")


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan; exit code 0 when it fits, 1 when it does not."""
    cfg = load_config(args.config, args.overrides)
    assume = Assumptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Assumptions)})
    arch = load_arch(cfg.model.hf_config)
    p = plan(cfg, arch, args.nodes, args.gpus_per_node, args.gpu_mem_gb, assume)
    print(format_plan(p))
    if args.trace:
        from megatron_grpo.plan.trace import default_ranks, format_trace, trace_rank

        world = args.nodes * args.gpus_per_node
        ranks = args.trace_rank or default_ranks(world, cfg.parallel.pipeline)
        bad = [r for r in ranks if not 0 <= r < world]
        if bad:
            raise ConfigError(f"--trace-rank {bad[0]}: not a rank of a {world}-GPU job")
        traces = [trace_rank(cfg, arch, world, rank, args.gpus_per_node) for rank in ranks]
        print(format_trace(p.train, traces))
    return 0 if p.fits else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="megatron-grpo plan", description=__doc__.splitlines()[0])
    add_plan_arguments(parser)
    return run_plan(parser.parse_args(argv))
