"""Strict config loading: round trip, clear errors, every shipped YAML, and the reference settings."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from megatron_grpo.config import Config, ConfigError, check_world, dump_yaml, load_config, to_dict
from megatron_grpo.config.loader import from_dict
from megatron_grpo.data.prepare import SOURCES
from tests.shared_data import SHARED, needs_shared

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert to_dict(from_dict(Config, to_dict(cfg))) == to_dict(cfg)


def _literal_options(cls: type, prefix: str = ""):
    """(key path, value) of every choice a ``Literal`` field documents, in every section."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _literal_options(tp, f"{prefix}{f.name}.")
        for lit in [tp, *typing.get_args(tp)]:
            if typing.get_origin(lit) is typing.Literal:
                yield from ((f"{prefix}{f.name}", v) for v in typing.get_args(lit))


def _algorithm_options():
    """Every registered loss with each advantage estimator it allows, with KL in the loss and in the reward."""
    from megatron_grpo.algo import ADVANTAGE_ESTIMATORS, POLICY_LOSSES

    for name, loss in POLICY_LOSSES.items():
        for adv in loss.advantages or ADVANTAGE_ESTIMATORS:
            for kl_in in ("loss", "reward"):
                yield [f"algo.loss={name}", f"algo.advantage={adv}", "algo.kl_coef=0.01", f"algo.kl_in={kl_in}"]


OPTIONS = [[f"{key}={value}"] for key, value in _literal_options(Config)] + list(_algorithm_options())


@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: ",".join(o))
def test_every_documented_option_loads_on_the_default(overrides):
    cfg = load_config(None, overrides)
    key, value = overrides[0].split("=")
    section, *path = key.split(".")
    got = getattr(cfg, section)
    for part in path:
        got = getattr(got, part)
    assert str(got).lower() == value.lower()


def test_default_is_the_embedded_tiny_config():
    assert load_config() == load_config(REPO / "configs" / "tiny_cpu.yaml")


def test_overrides_parse_types_and_paths_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["optim.lr=2e-6", "rollout.train.n=4", "logging.wandb=true", "model.tokenizer=tok"])
    assert cfg.optim.lr == 2e-6 and cfg.rollout.train.n == 4 and cfg.logging.wandb is True
    assert cfg.model.tokenizer == "tok"  # an override path is taken as given (relative to the working dir)
    assert Path(load_config().model.tokenizer).is_absolute()  # a file path is resolved against the file


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    (["trainer.seed=abc"], "trainer.seed: expected an integer, got str 'abc'"),
    (["optim.lr=-1"], "optim.lr: must be > 0, got -1.0"),
    (["rollout.train.n=1"], "rollout.train.n: GRPO needs >= 2 responses per prompt"),
    (["rollout.train.temperature=0"], "rollout.train.temperature: must be > 0 for training rollouts"),
    (["algo.mini_batch_prompts=48"], "algo.mini_batch_prompts: 48 must divide data.batch_prompts 64"),
    (["algo.loss_agg_mode=mean"], "loss_agg_mode: 'mean' is not one of"),
    (["parallel.sequence_parallel=true"], "sequence_parallel: needs tensor > 1"),
    (["rollout.train.max_response_length=100"], "exceeds max_model_len 64"),
    (["rollout.placement=disaggregated", "rollout.max_staleness=1", "algo.rollout_is=none"],
     "rollout.max_staleness: off-policy samples need algo.rollout_is"),
    (["rollout.placement=disaggregated", "rollout.max_staleness=1", "algo.dynamic_sampling=true"],
     "rollout.max_staleness: dynamic sampling regenerates"),
    (["model.dtype=fp8"], "model.dtype: 'fp8' is not one of ['fp32', 'bf16', 'fp16']"),
    (["model.moe_aux_loss_coef=-0.01"], "moe_aux_loss_coef: must be >= 0, got -0.01"),
    (["algo.routing_replay=true", "model.recompute=full"], "algo.routing_replay: model.recompute: full routes"),
    (["nonsense"], "override 'nonsense' must look like key.path=value"),
])
def test_invalid_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize(("world", "layout", "message"), [
    (6, ["parallel.tensor=4"], "world size 6 is not divisible by tensor x pipeline = 4"),
    (8, ["parallel.tensor=8"], "parallel.tensor: 8 does not divide num_attention_heads 4"),
    (3, [], "data.batch_prompts: 64 is not divisible by data-parallel size 3"),
    (4, ["parallel.pipeline=4"], "4 model chunks do not divide num_hidden_layers 2"),
    (2, ["parallel.expert=2"], "parallel.expert: 2 needs a mixture-of-experts model; this one is dense"),
    (1, ["algo.routing_replay=true"], "algo.routing_replay: needs a mixture-of-experts model; this one is dense"),
    (8, ["rollout.tensor_parallel=8"], "rollout.tensor_parallel: 8 does not divide num_attention_heads 4"),
    (6, ["data.batch_prompts=6", "algo.mini_batch_prompts=6", "rollout.tensor_parallel=4"],
     "rollout.tensor_parallel: 4 colocated engines need it to divide the world size 6"),
])
def test_world_checks(world, layout, message):
    cfg = load_config(None, layout)
    with pytest.raises(ConfigError) as err:
        check_world(cfg, world, num_attention_heads=4, num_query_groups=2, num_layers=2)
    assert message in str(err.value)


def test_colocated_engines_span_consecutive_ranks_of_a_node():
    from megatron_grpo.rollout.groups import check_engine_fits_node

    check_world(load_config(None, ["rollout.tensor_parallel=2"]), 4, 4, 2, 2)  # two TP-2 engines in 4 ranks
    check_world(load_config(None, ["rollout.placement=disaggregated", "rollout.tensor_parallel=4"]), 2, 4, 2, 2)
    check_engine_fits_node(4, ranks_per_node=4)
    with pytest.raises(ConfigError, match="the ranks per node \\(2\\)"):
        check_engine_fits_node(4, ranks_per_node=2)  # an engine would straddle two nodes


@pytest.mark.parametrize(("world", "layout", "message"), [
    (4, ["parallel.expert=3"], "parallel.expert: 3 does not divide the model's 4 experts"),
    (2, ["parallel.expert=4"], "world size 2 is not divisible by expert_tensor x expert x pipeline = 4"),
    (2, ["parallel.tensor=2"], "parallel.sequence_parallel: an MoE model with tensor > 1 needs it"),
])
def test_moe_world_checks(world, layout, message):
    cfg = load_config(None, layout)
    with pytest.raises(ConfigError) as err:
        check_world(cfg, world, num_attention_heads=4, num_query_groups=2, num_layers=2, num_experts=4)
    assert message in str(err.value)
    check_world(load_config(None, ["parallel.expert=2"]), 2, 4, 2, 2, num_experts=4)  # and a layout that fits


def test_expert_tensor_defaults_to_tensor():
    assert load_config(None, ["parallel.tensor=2"]).parallel.expert_tensor_size == 2
    assert load_config(None, ["parallel.tensor=2", "parallel.expert_tensor=1"]).parallel.expert_tensor_size == 1
    with pytest.raises(ConfigError, match="expert_tensor: must be >= 1, got 0"):
        load_config(None, ["parallel.expert_tensor=0"])


def _reference_table() -> dict[str, str]:
    """The 'Settings stated on the model card' table of shared/REFERENCE.md: setting -> value."""
    text = (SHARED / "REFERENCE.md").read_text()
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", text, flags=re.M)
    return {k.strip(): v.strip() for k, v in rows if k.strip() not in ("setting", "---")}


@needs_shared
def test_reference_config_matches_reference_md():
    cfg = load_config(REPO / "configs" / "qwen3_4b_dapo.yaml")
    ref = _reference_table()
    tokens = lambda key: int(re.search(r"\d+", ref[key]).group())  # noqa: E731
    assert cfg.rollout.train.n == int(ref["responses per prompt (n)"])
    assert cfg.rollout.max_prompt_length == tokens("max prompt length")
    assert cfg.rollout.train.max_response_length == tokens("max response length (training)")
    assert cfg.rollout.val.max_response_length == tokens("max response length (validation)")
    assert cfg.rollout.max_model_len == int(ref["max model length"])
    temperature, penalty = (float(x) for x in ref["rollout temperature / repetition penalty"].split("/"))
    assert (cfg.rollout.train.temperature, cfg.rollout.train.repetition_penalty) == (temperature, penalty)
    assert cfg.optim.lr == float(ref["learning rate"])
    assert cfg.algo.mini_batch_prompts == cfg.data.batch_prompts == tokens("PPO mini-batch size")
    assert cfg.parallel.tensor == int(ref["tensor parallel"])
    assert cfg.trainer.total_epochs == int(ref["epochs"])
    assert cfg.trainer.test_freq == cfg.checkpoint.save_freq == tokens("save / test frequency")
    assert cfg.algo.loss_agg_mode == ref["loss aggregation"]
    assert ref["KL loss"].startswith("disabled") and cfg.algo.kl_coef == 0.0
    assert "GRPO" in ref["algorithm"] and cfg.algo.advantage == "grpo" and cfg.algo.outcome_weight == 1.0
    # from the launch scripts (REFERENCE.md, second and third sections)
    assert (cfg.algo.rollout_is, cfg.algo.rollout_is_threshold) == ("token", 2.0)
    # verl's 32768 tokens per GPU: Megatron copies fp32 logits once more, so half of it fits 80 GB
    # (tests/plan/test_estimate.py); the update is the same (the loss is normalised by global token counts)
    assert cfg.algo.micro_batch_tokens == 16384
    assert cfg.rollout.gpu_memory_utilization == 0.8 and cfg.rollout.offload_trainer  # verl's, with offload
    assert (cfg.optim.weight_decay, cfg.optim.grad_clip, cfg.optim.lr_schedule) == (0.01, 1.0, "constant")
    assert (cfg.rollout.val.n, cfg.rollout.val.top_p, cfg.rollout.val.temperature) == (16, 0.95, 1.0)
    assert cfg.model.dtype == "fp32" and cfg.data.shuffle is False and cfg.data.enable_thinking is False
    assert [s.name for s in cfg.eval.sets] == ["aime25", "amc23", "aime24"]
    # the data is what `megatron-grpo data prepare` writes into data/, the tokenizer the checkpoint's own
    prepared = {str(REPO / "data" / s.output): name for name, s in SOURCES.items()}
    assert [prepared.get(p) for p in (*cfg.data.train_files, *(s.path for s in cfg.eval.sets))] == [
        "dapo17k_processed", "aime25", "amc83", "aime24"]
    assert Path(cfg.model.hf_config).is_file() and cfg.model.tokenizer == cfg.model.hf_checkpoint
