"""plan.estimate: hand-computed numbers on a tiny model, the reference job and a 32B model on one node."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from megatron_grpo.config import (
    AlgoConfig,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    ParallelConfig,
    RolloutConfig,
    SamplingConfig,
    load_config,
)
from megatron_grpo.families import arch_from_dict, load_arch
from megatron_grpo.plan.estimate import GIB, Assumptions, format_plan, main, matmul_params, plan, total_params

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "max_position_embeddings": 40960, "rms_norm_eps": 1e-6}
TINY = arch_from_dict({**QWEN3, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 16, "vocab_size": 100,
                       "tie_word_embeddings": False})
QWEN3_32B = arch_from_dict({**QWEN3, "hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 64,
                            "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 25600,
                            "vocab_size": 151936, "tie_word_embeddings": False})


def _tiny_cfg(dtype="bf16", recompute="none") -> Config:
    return Config(
        model=ModelConfig(hf_config="unused", dtype=dtype, recompute=recompute, make_vocab_size_divisible_by=8),
        parallel=ParallelConfig(tensor=1, pipeline=1),
        algo=AlgoConfig(micro_batch_tokens=10, mini_batch_prompts=4),
        data=DataConfig(batch_prompts=4),
        rollout=RolloutConfig(train=SamplingConfig(n=2, max_response_length=20), max_prompt_length=4,
                              max_model_len=24, gpu_memory_utilization=0.5),
    )


def _reference_cfg(**model) -> Config:
    """The reference job (docs REFERENCE.md): TP1, fp32, 32768-token micro-batches, vLLM at 0.8, and
    gradient checkpointing (the study's verl script sets enable_gradient_checkpointing=True)."""
    return Config(model=ModelConfig(hf_config="unused", dtype="fp32", recompute="full", **model),
                  rollout=RolloutConfig(gpu_memory_utilization=0.8, tensor_parallel=1))


def test_tiny_model_numbers_by_hand():
    # layer: q 2*4*8=64, k 32, v 32, o 64, gate/up/down 3*16*8=384, norms 2*8+2*4=24 -> 600
    assert total_params(TINY) == 2 * 600 + 2 * 100 * 8 + 8
    p = plan(_tiny_cfg(), TINY, nodes=1, gpus_per_node=2, gpu_mem_gb=1.0,
             assume=Assumptions(mean_prompt_tokens=4, mean_response_tokens=6, reserve_gb=0))
    assert (p.layout.tp, p.layout.pp, p.layout.dp, p.layout.engines) == (1, 1, 2, 2)
    stage = 1200 + 8 + 2 * 104 * 8  # vocab 100 padded to 104; untied: embedding + output layer
    assert p.params_per_gpu == stage
    t = p.train
    assert (t.params, t.grads, t.optimizer) == (stage * 2, stage * 4, stage * 12 / 2)  # bf16, fp32 grads, DP 2
    per_token_layer = 4 * 8 + 3 * (2 + 1) * 4 + 3 * 16  # 116 elements
    assert t.activations == t.last_activations == 2 * per_token_layer * 10 * 2
    assert t.backward == 3 * 16 * 10 * 2  # the MLP's gradient temporaries: gate/up output and SwiGLU output
    assert t.logits == 10 * 104 * (2 + 4)
    assert t.peak == t.params + t.grads + t.optimizer + t.activations + max(t.logits, t.backward)
    r = p.rollout
    assert r.kv_bytes_per_token == 2 * 2 * 1 * 4 * 2 and r.weights == total_params(TINY) * 2
    assert r.budget == 0.5 * GIB and r.seqs_per_engine == 4 and r.seq_tokens == 24
    th = p.throughput
    n_mm, attn = 2 * 600 + 100 * 8, 2 * 2 * 4
    assert th.train_flops == 8 * 10 * 3 * (2 * n_mm + 4 * attn * 5)
    assert th.gen_flops == 8 * (4 * (2 * n_mm + 4 * attn * 2) + 6 * (2 * n_mm + 4 * attn * 7))
    assert math.isclose(th.train_s, th.train_flops / (2 * 989.4e12 * 0.35))
    assert p.fits and "FITS" in format_plan(p)


@pytest.mark.parametrize(("algo", "passes", "reference"), [
    ({}, 3, False),
    ({"ppo_epochs": 2}, 3 * 2 + 1, False),  # forward and backward twice, pi_old's forward once
    ({"rollout_is_mask": True}, 4, False),  # masking needs pi_old before the loss (algo.is_on_policy)
    ({"kl_coef": 0.1}, 4, True),  # the reference's forward
    ({"kl_coef": 0.1, "kl_in": "reward"}, 5, True),  # ... and pi_old's, before the advantages
])
def test_extra_passes_and_the_kl_reference(algo, passes, reference):
    base = _tiny_cfg()
    cfg = dataclasses.replace(base, algo=dataclasses.replace(base.algo, **algo))
    p = plan(cfg, TINY, nodes=1, gpus_per_node=2, gpu_mem_gb=1.0,
             assume=Assumptions(mean_prompt_tokens=4, mean_response_tokens=6, reserve_gb=0))
    n_mm, attn = 2 * 600 + 100 * 8, 2 * 2 * 4
    assert p.throughput.train_flops == 8 * 10 * passes * (2 * n_mm + 4 * attn * 5)
    assert p.reference_host == (p.train.params if reference else 0.0)
    assert ("KL reference" in format_plan(p)) == reference


def test_tiny_full_recompute_keeps_layer_inputs_and_one_layer():
    t = plan(_tiny_cfg(recompute="full"), TINY, 1, 2, 1.0).train
    assert t.activations == 2 * 8 * 10 * 2 and t.backward == (116 + 3 * 16) * 10 * 2
    assert t.peak == t.params + t.grads + t.optimizer + t.activations + max(t.logits, t.backward)


def test_pipeline_peak_is_the_busier_of_first_and_last_stage():
    """1F1B: the first stage holds L layers of activations and no logits, the last L/p layers and the logits."""
    cfg = dataclasses.replace(_tiny_cfg(), parallel=ParallelConfig(pipeline=2))
    t = plan(cfg, TINY, 1, 2, 1.0).train
    assert t.last_activations == t.activations / 2
    first, last = t.activations + t.backward, t.last_activations + max(t.logits, t.backward)
    assert t.peak == t.static + max(first, last)


def test_fp32_logits_of_several_sequences_are_copied_once():
    """GPTModel's [s, b] -> [b, s] logits copy: 2 x 4 bytes with several sequences per micro-batch."""
    several = dataclasses.replace(_tiny_cfg(dtype="fp32"), algo=AlgoConfig(micro_batch_tokens=48, mini_batch_prompts=4))
    one = dataclasses.replace(several, algo=AlgoConfig(micro_batch_tokens=24, mini_batch_prompts=4))
    assert plan(several, TINY, 1, 2, 1.0).train.logits == 48 * 104 * 8
    assert plan(one, TINY, 1, 2, 1.0).train.logits == 24 * 104 * 4


def test_tiny_tensor_parallel_splits_weights_and_heads():
    arch = dataclasses.replace(TINY, num_query_groups=2)  # layer: 4 x 64 + 384 split, 24 of norms not
    cfg = Config(**{**_tiny_cfg().__dict__, "parallel": ParallelConfig(tensor=2, sequence_parallel=True)})
    p = plan(cfg, arch, 1, 2, 1.0)
    assert p.params_per_gpu == 2 * (640 // 2 + 24) + 8 + 2 * 104 * 8 // 2  # vocab 100 padded to lcm(8, TP 2)
    assert p.train.activations == 2 * (32 + 3 * 4 * 4 + 48) / 2 * 10 * 2  # sequence parallel splits all by TP


def test_param_count_matches_hf_layout():
    from megatron_grpo.families import hf_layout

    for arch in (TINY, QWEN3_32B, load_arch(CONFIGS / "qwen3-4b-base.config.json")):
        assert total_params(arch) == sum(math.prod(s) for s in hf_layout(arch).values())


def test_reference_job_on_one_h100_node():
    """The reference settings as verl ran them (32768-token micro-batches, vLLM at 0.8 of the GPU): with
    Megatron's fp32 logits copy the training peak is over an 80 GB GPU (plan --trace measures 84.5 GiB),
    and the plan names the knob that fixes it without changing the algorithm."""
    arch = load_arch(CONFIGS / "qwen3-4b-base.config.json")
    p = plan(_reference_cfg(), arch, nodes=1, gpus_per_node=8, gpu_mem_gb=80)
    assert (p.layout.tp, p.layout.dp, p.layout.engines) == (1, 8, 8)
    assert 4.0e9 < p.params_total < 4.05e9
    assert 33 * GIB < p.train.static < 34.5 * GIB
    assert 81 * GIB < p.train.peak < 83 * GIB  # two fp32 32768 x 151936 logits tensors: 37.1 GiB
    assert not p.fits_train
    assert any(a.startswith("algo.micro_batch_tokens=16384") for a in p.advice), p.advice
    tail = 7168 * p.params_total * 2 / 3.35e12  # the longest response decodes token by token (bf16 engine): ~17 s
    assert p.throughput.gen_s >= tail and plan(_reference_cfg(), arch, 8, 8, 80).throughput.gen_s == tail
    single = plan(_reference_cfg(), arch, 1, 8, 80, Assumptions(engines=1))  # one engine for the whole batch
    assert single.rollout.seqs_per_engine == 512 and single.throughput.gen_s > 7 * p.throughput.gen_s

    half = dataclasses.replace(_reference_cfg(), algo=AlgoConfig(micro_batch_tokens=16384))
    p = plan(half, arch, 1, 8, 80)
    assert p.fits  # vLLM at 0.8 like verl: the trainer's state waits in host memory meanwhile
    assert p.rollout.trainer_resident == 0 and p.rollout.host_offload == p.train.params + p.train.optimizer
    assert p.rollout.refit == p.train.params + p.rollout.weights + 2 * 512 * 2**20  # weights meet in the refit
    resident = dataclasses.replace(half, rollout=dataclasses.replace(half.rollout, offload_trainer=False))
    q = plan(resident, arch, 1, 8, 80)
    assert q.rollout.trainer_resident == q.train.static and not q.fits_rollout  # 34 GiB + vLLM at 0.8
    assert "rollout.gpu_memory_utilization=0.55" in "\n".join(q.advice)


def test_shipped_reference_config_fits_one_h100_node(capsys):
    cfg = load_config(REPO_CONFIGS / "qwen3_4b_dapo.yaml")
    p = plan(cfg, load_arch(cfg.model.hf_config), nodes=1, gpus_per_node=8, gpu_mem_gb=80)
    assert p.fits, format_plan(p)
    assert main(["--config", str(REPO_CONFIGS / "qwen3_4b_dapo.yaml"), "--nodes", "1", "--gpus-per-node", "8"]) == 0
    assert "verdict: FITS" in capsys.readouterr().out


def test_32b_on_one_node_at_tp1_does_not_fit_and_suggests_tp_pp():
    p = plan(_reference_cfg(), QWEN3_32B, nodes=1, gpus_per_node=8, gpu_mem_gb=80)
    assert not p.fits and p.train.static > 250 * GIB
    assert any("parallel.tensor=8 parallel.pipeline=" in a for a in p.advice), p.advice
    assert "DOES NOT FIT" in format_plan(p)


def test_cli_main_prints_and_returns_fit(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{hf_config: {CONFIGS / 'qwen3-0.6b-base.config.json'}, recompute: full}}\n"
                   "algo: {micro_batch_tokens: 16384}\n")
    assert main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "TP 1 x PP 1 x DP 8" in out and "verdict: FITS" in out


# ---- disaggregated placement ---------------------------------------------------------------------

DISAGGREGATED_32B = [f"model.hf_config={CONFIGS / 'qwen3-32b.config.json'}", "model.dtype=bf16",
                     "model.recompute=full", "parallel.tensor=8", "parallel.sequence_parallel=true",
                     "rollout.placement=disaggregated", "rollout.tensor_parallel=4", "rollout.num_engines=2"]


def _disaggregated(overrides: list[str]) -> Config:
    return load_config(REPO_CONFIGS / "qwen3_4b_dapo.yaml", overrides)


def test_qwen3_32b_on_two_nodes_trains_on_one_and_generates_on_the_other():
    cfg = _disaggregated(DISAGGREGATED_32B)
    p = plan(cfg, load_arch(cfg.model.hf_config), nodes=2, gpus_per_node=8, gpu_mem_gb=80)
    lo, r, th = p.layout, p.rollout, p.throughput
    assert (lo.world, lo.tp, lo.dp, lo.engines, lo.rollout_tp, lo.engine_gpus) == (8, 8, 1, 2, 4, 8)
    # the trainer's GPUs hold exactly what a trainer-only TP8 job on one node holds
    alone = plan(dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, placement="colocated",
                                                                      tensor_parallel=1, num_engines=1)),
                 load_arch(cfg.model.hf_config), nodes=1, gpus_per_node=8, gpu_mem_gb=80)
    assert p.train == alone.train
    # an engine GPU holds no trainer state; during the refit only the bucket in flight is added
    assert r.trainer_resident == 0 and r.host_offload == 0
    assert r.weights == total_params(load_arch(cfg.model.hf_config)) * 2 / 4
    assert r.refit == r.weights + 2 * (cfg.rollout.refit_bucket_mb << 20)
    assert r.seqs_per_engine == cfg.data.batch_prompts * cfg.rollout.train.n // 2
    # training uses the trainer's 8 GPUs, generation the engines' 8; the refit crosses once
    assert th.refit_s == th.refit_bytes / 25e9
    assert th.on_policy_s == th.gen_s + th.train_s + th.refit_s
    assert th.off_policy_s == max(th.gen_s, th.train_s) + th.refit_s < th.on_policy_s
    assert th.step_s == th.on_policy_s  # max_staleness 0
    assert p.fits, format_plan(p)
    text = format_plan(p)
    assert "2 rollout engine(s) of TP 4 on 8 GPUs of their own" in text and "one step off-policy" in text


def test_qwen3_14b_on_one_node_one_step_off_policy(capsys):
    overrides = [f"model.hf_config={CONFIGS / 'qwen3-14b-base.config.json'}", "model.dtype=bf16",
                 "model.recompute=full", "parallel.tensor=4", "parallel.sequence_parallel=true",
                 "rollout.placement=disaggregated", "rollout.tensor_parallel=2", "rollout.num_engines=2",
                 "rollout.max_staleness=1"]
    cfg = _disaggregated(overrides)
    p = plan(cfg, load_arch(cfg.model.hf_config), nodes=1, gpus_per_node=8, gpu_mem_gb=80)
    assert (p.layout.world, p.layout.engine_gpus) == (4, 4) and p.fits, format_plan(p)
    assert p.throughput.step_s == p.throughput.off_policy_s
    assert main(["--config", str(REPO_CONFIGS / "qwen3_4b_dapo.yaml"), *overrides]) == 0
    assert "this config: one step off-policy" in capsys.readouterr().out


def test_engines_that_leave_no_gpu_to_train_are_refused():
    cfg = _disaggregated([*DISAGGREGATED_32B, "rollout.num_engines=4"])
    with pytest.raises(ConfigError, match="rollout.num_engines: 4 engines of TP 4 take 16 of the job's 16 GPUs"):
        plan(cfg, load_arch(cfg.model.hf_config), nodes=2, gpus_per_node=8)
    with pytest.raises(ConfigError, match="engines: disaggregated placement takes rollout.num_engines"):
        plan(_disaggregated(DISAGGREGATED_32B), QWEN3_32B, 2, 8, assume=Assumptions(engines=1))


def test_tiny_moe_numbers_by_hand():
    """2 layers, 4 experts of gate/up/down 3 x 6 x 8 = 144, top-2, EP2 on 2 GPUs: each holds 2 experts,
    the 32-element router and the attention whole; a token passes through 2 experts per layer."""
    moe = arch_from_dict({**QWEN3, "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 8, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 16,
                          "vocab_size": 100, "tie_word_embeddings": False, "num_experts": 4,
                          "num_experts_per_tok": 2, "moe_intermediate_size": 6})
    layer = 64 + 32 + 32 + 64 + 24 + 4 * 8  # attention, norms, router
    assert total_params(moe) == 2 * (layer + 4 * 144) + 2 * 100 * 8 + 8
    cfg = dataclasses.replace(_tiny_cfg(), parallel=ParallelConfig(expert=2))
    p = plan(cfg, moe, nodes=1, gpus_per_node=2, gpu_mem_gb=1.0)
    assert (p.layout.ep, p.layout.etp, p.layout.edp, p.layout.dp) == (2, 1, 1, 2)
    assert p.params_per_gpu == 2 * (layer + 2 * 144) + 8 + 2 * 104 * 8
    assert p.params_active == 2 * (layer + 2 * 144) + 2 * 100 * 8 + 8
    experts = 2 * 2 * 144  # sharded over expert-DP 1; the rest over DP 2
    assert p.train.optimizer == (p.params_per_gpu - experts) * 12 / 2 + experts * 12
    assert "EP 2 x expert-TP 1 x expert-DP 1" in format_plan(p) and "B active per token" in format_plan(p)


def test_qwen3_30b_a3b_with_ep8_needs_two_nodes():
    """Qwen3-30B-A3B in bf16, EP8: on one node every GPU keeps its 16 experts' Adam state whole (expert-DP
    1) and the step does not fit; on two nodes expert-DP 2 halves it and it fits. The plan says which."""
    arch = load_arch(CONFIGS / "qwen3-30b-a3b-base.config.json")
    cfg = load_config(REPO_CONFIGS / "qwen3_4b_dapo.yaml",
                      ["parallel.expert=8", "model.dtype=bf16", "algo.micro_batch_tokens=8192"])
    one, two = plan(cfg, arch, 1, 8, 80), plan(cfg, arch, 2, 8, 80)
    assert 30.4e9 < one.params_total < 30.6e9 and 3.2e9 < one.params_active < 3.5e9
    assert one.layout.edp == 1 and two.layout.edp == 2
    assert two.train.optimizer < 0.55 * one.train.optimizer
    assert not one.fits and any("on 2 nodes" in a for a in one.advice), one.advice
    assert two.fits, format_plan(two)
    # FLOPs follow the active parameters: 8 of 128 experts (plus attention and the output layer)
    assert matmul_params(arch) < 0.12 * total_params(arch)
