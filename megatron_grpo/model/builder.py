"""Build the Megatron-Core policy: TransformerConfig, layer spec, GPTModel chunks, DDP, optimizer.

``transformer_config`` is the only place a ``TransformerConfig`` is made: the model family decides the
architecture's fields (``families``), this module the parallel layout, dtype and fusions. The layer spec is
chosen in ``layer_spec``: Transformer Engine on GPU when importable (grouped-GEMM experts), Megatron's local
layers otherwise (sequential experts; torch's fused attention in the core-attention slot,
``model/attention.py``).
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state as ps
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.moe.router_replay import RouterReplay
from megatron.core.transformer.spec_utils import ModuleSpec

from megatron_grpo import platform
from megatron_grpo.config import ConfigError, ModelConfig, OptimizerConfig, ParallelConfig
from megatron_grpo.families import ModelArch, family, padded_vocab_size
from megatron_grpo.model.attention import SDPAttention
from megatron_grpo.platform import DTYPES


def use_transformer_engine(model_cfg: ModelConfig) -> bool:
    if model_cfg.transformer_impl == "local":
        return False
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        available = False
    else:
        available = platform.has_cuda()
    if model_cfg.transformer_impl == "transformer_engine" and not available:
        raise ConfigError("model.transformer_impl: transformer_engine requested but TE/CUDA is not available")
    return available


def layer_spec(arch: ModelArch, model_cfg: ModelConfig) -> ModuleSpec:
    experts = arch.num_experts or None
    if use_transformer_engine(model_cfg):
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(num_experts=experts, moe_grouped_gemm=arch.is_moe,
                                                          qk_layernorm=arch.qk_layernorm)
    spec = get_gpt_layer_local_spec(num_experts=experts, moe_grouped_gemm=False, qk_layernorm=arch.qk_layernorm,
                                    normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention  # flash-style, not s^2 scores
    return spec


def aux_loss_coef(arch: ModelArch, model_cfg: ModelConfig) -> float:
    """The MoE load-balancing loss coefficient: the config's, else the HF config's; 0 for a dense model."""
    if not arch.is_moe:
        return 0.0
    return arch.router_aux_loss_coef if model_cfg.moe_aux_loss_coef is None else model_cfg.moe_aux_loss_coef


def _family_fields(arch: ModelArch, model_cfg: ModelConfig, par: ParallelConfig, te: bool) -> dict:
    fields = family(arch).megatron(arch)
    if arch.is_moe:
        coef = aux_loss_coef(arch, model_cfg)  # rescaled every step: forward.train_micro_batches
        fields.update(
            moe_aux_loss_coeff=coef,
            moe_router_load_balancing_type="aux_loss" if coef > 0 else "none",
            moe_grouped_gemm=te,
            expert_model_parallel_size=par.expert,
            expert_tensor_parallel_size=par.expert_tensor_size,
            # A RouterReplay in every router; it replays only when a micro-batch carries the engine's
            # routing (model/routing.py), else the router routes as usual.
            moe_enable_routing_replay=True,
        )
    return fields


def transformer_config(arch: ModelArch, model_cfg: ModelConfig, par: ParallelConfig) -> TransformerConfig:
    dtype = DTYPES[model_cfg.dtype]
    gpu = platform.accelerated()  # CUDA, or the meta stand-in of it
    recompute = {}
    if model_cfg.recompute == "full":
        recompute = dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif model_cfg.recompute == "selective":
        recompute = dict(recompute_granularity="selective")
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim,
        ffn_hidden_size=arch.ffn_hidden_size,
        layernorm_epsilon=arch.norm_eps,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=arch.init_std,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype is torch.bfloat16,
        fp16=dtype is torch.float16,
        tensor_model_parallel_size=par.tensor,
        pipeline_model_parallel_size=par.pipeline,
        virtual_pipeline_model_parallel_size=par.virtual_pipeline,
        sequence_parallel=par.sequence_parallel,
        # Loss functions normalise by GLOBAL token counts themselves; Megatron must not rescale.
        calculate_per_token_loss=True,
        # Packed micro-batches differ in length; PP exchanges shapes first.
        variable_seq_lengths=True,
        # Micro-batches differ in length between ranks: "allgather" needs equal ones (and rejects
        # variable_seq_lengths). On CPU it runs through platform.patches (_alltoall_dispatcher_on_host).
        moe_token_dispatcher_type="alltoall",
        use_cpu_initialization=not gpu,
        # Fused kernels need CUDA (and TE/apex); off on CPU.
        gradient_accumulation_fusion=False,
        masked_softmax_fusion=gpu,
        bias_activation_fusion=gpu,
        bias_dropout_fusion=gpu,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        # CPU: gloo has no batched isend/irecv sync semantics ("batch_p2p_sync" hangs).
        batch_p2p_sync=gpu,
        **recompute,
        **_family_fields(arch, model_cfg, par, use_transformer_engine(model_cfg)),
    )


def build_model(arch: ModelArch, model_cfg: ModelConfig, par: ParallelConfig) -> list[GPTModel]:
    """One GPTModel per virtual-pipeline chunk held by this rank (a single chunk without VPP)."""
    config = transformer_config(arch, model_cfg, par)
    spec = layer_spec(arch, model_cfg)
    # Each router registers its RouterReplay in a process-wide list this project never reads (it finds a
    # chunk's routers itself): drop those of earlier models so they are not kept alive.
    RouterReplay.clear_global_router_replay_instances()
    vocab = padded_vocab_size(arch.vocab_size, model_cfg.make_vocab_size_divisible_by, par.tensor)
    chunks = []
    for vp in range(par.virtual_pipeline or 1):
        vp_stage = vp if par.virtual_pipeline else None
        model = GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=vocab,
            max_sequence_length=arch.max_position_embeddings,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            share_embeddings_and_output_weights=arch.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_base=int(arch.rope_theta),
            vp_stage=vp_stage,
        )
        if platform.accelerated():  # torch norms (no TE/apex) and some buffers are made on the host
            model.to(platform.device())
        if arch.is_moe:
            _experts_always_expert_parallel(model)
        chunks.append(model)
    return chunks


def _experts_always_expert_parallel(model: GPTModel) -> None:
    """Megatron marks routed-expert weights expert-parallel (``allreduce=False``) only when EP > 1. At EP 1
    they then join the dense parameters: one optimizer instead of the chained dense + expert pair, so a
    checkpoint's optimizer keys change with EP and cannot reshard between EP 1 and EP 2; and with
    expert_tensor < tensor their gradients are reduced over the dense data-parallel group, which misses
    the other TP ranks' tokens. Marked always, they are reduced over the expert-data-parallel group, which
    at EP 1 with expert_tensor = tensor is the same group, and elsewhere the right one."""
    for name, param in model.named_parameters():
        if ".mlp.experts." in name:
            param.allreduce = False


def wrap_ddp(chunks: list[GPTModel], par: ParallelConfig) -> list[DistributedDataParallel]:
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=par.distributed_optimizer,
    )
    return [
        DistributedDataParallel(config=c.config, ddp_config=ddp_config, module=c, disable_bucketing=i > 0)
        for i, c in enumerate(chunks)
    ]


def build_optimizer(model: list[DistributedDataParallel], optim: OptimizerConfig, model_cfg: ModelConfig,
                    par: ParallelConfig, total_steps: int):
    """Megatron optimizer (distributed when configured) and its LR/WD scheduler."""
    dtype = DTYPES[model_cfg.dtype]
    config = MegatronOptimizerConfig(
        optimizer="adam",
        lr=optim.lr,
        min_lr=optim.min_lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1,
        adam_beta2=optim.adam_beta2,
        adam_eps=optim.adam_eps,
        clip_grad=optim.grad_clip,
        bf16=dtype is torch.bfloat16,
        fp16=dtype is torch.float16,
        params_dtype=dtype,
        use_distributed_optimizer=par.distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(config, model)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if optim.warmup_steps else optim.lr,
        max_lr=optim.lr,
        min_lr=optim.min_lr if optim.lr_schedule == "cosine" else optim.lr,
        lr_warmup_steps=optim.warmup_steps,
        lr_decay_steps=max(total_steps, optim.warmup_steps + 1),
        lr_decay_style=optim.lr_schedule,
        start_wd=optim.weight_decay,
        end_wd=optim.weight_decay,
        wd_incr_steps=max(total_steps, 1),
        wd_incr_style="constant",
    )
    return optimizer, scheduler
