"""Typed, validated configuration: hardware profiles, search spaces and search settings.

This is the only module that reads YAML. Every file becomes a frozen, keyword-only dataclass
that validates itself in ``__post_init__``; unknown keys are rejected. Errors name the file,
the field, the value and what would be valid.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from autoprune.errors import ConfigError
from autoprune.plan import STRUCTURES

BACKENDS = ("onnxruntime", "torch", "tvm")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
#: the ``SearchConfig.predictor`` values that name no file
PREDICTOR_AUTO, PREDICTOR_OFF = "auto", "off"
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "latency_p90": "minimize",
              "params": "minimize", "macs": "minimize", "memory": "minimize"}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
             f"`{name}` must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value: Any, low: float, high: float | None = None) -> None:
    ok = _is_number(value) and value >= low and (high is None or value <= high)
    bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
    _require(ok, f"`{name}` must be a number {bound}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    _require(value in choices, f"`{name}` must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RpcConfig:
    """Where a remote board's TVM RPC server (or tracker) listens."""

    host: str
    port: int
    key: str | None = None
    use_tracker: bool = False
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _require(isinstance(self.host, str) and bool(self.host), f"`rpc.host` must be a host name, got {self.host!r}")
        _check_int("rpc.port", self.port, 1)
        _check_number("rpc.timeout_s", self.timeout_s, 0.1)


@dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """One target device and how latency is measured on it (hw_profiles/*.yaml)."""

    name: str
    backend: str
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    input_shape: tuple[int, ...] | None = None
    precision: str = "fp32"
    warmup_s: float = 0.5
    min_runs: int = 50
    repeats: int = 5
    max_cv: float = 0.05
    max_remeasure: int = 2
    round_to: int = 8
    fast_structures: tuple[str, ...] = ("channel",)
    target: Mapping[str, Any] | None = None
    tuning_trials: int = 0
    tuning_db: str | None = None
    cross_compiler: str | None = None
    rpc: RpcConfig | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), f"`name` must be a non-empty string, got {self.name!r}")
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("device", self.device, DEVICES)
        _check_int("threads", self.threads, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.input_shape is not None:
            _require(all(isinstance(d, int) and d > 0 for d in self.input_shape),
                     f"`input_shape` must be positive integers, got {list(self.input_shape)}")
        _check_choice("precision", self.precision, PRECISIONS)
        _require(self.precision == "fp32" or self.device == "cuda", "`precision` fp16 needs `device: cuda`")
        _check_number("warmup_s", self.warmup_s, 0.0)
        _check_int("min_runs", self.min_runs, 1)
        _check_int("repeats", self.repeats, 1)
        _check_number("max_cv", self.max_cv, 0.0, 10.0)
        _check_int("max_remeasure", self.max_remeasure, 0)
        _check_int("round_to", self.round_to, 1)
        for s in self.fast_structures:
            _check_choice("fast_structures", s, STRUCTURES)
        _check_int("tuning_trials", self.tuning_trials, 0)
        if self.target is not None:
            _require(isinstance(self.target, Mapping) and isinstance(self.target.get("kind"), str),
                     f"`target` must be a mapping with a `kind` (e.g. {{kind: llvm}}), got {self.target!r}")
            for key, value in self.target.items():
                _require(isinstance(key, str) and isinstance(value, (str, int, bool, list, tuple)),
                         f"`target.{key}` must be a string, number, boolean or list, got {value!r}")
        if self.tuning_db is not None:
            _require(isinstance(self.tuning_db, str) and bool(self.tuning_db),
                     f"`tuning_db` must be a folder path, got {self.tuning_db!r}")
        if self.cross_compiler is not None:
            _require(isinstance(self.cross_compiler, str) and bool(self.cross_compiler),
                     f"`cross_compiler` must be a compiler command (e.g. aarch64-linux-gnu-g++), got {self.cross_compiler!r}")
        _require(self.backend == "tvm" or (self.target is None and self.rpc is None),
                 "`target` and `rpc` only apply to `backend: tvm`")


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What the agents may propose (search_spaces/*.yaml)."""

    name: str
    structures: tuple[str, ...] = ("channel",)
    ratio_min: float = 0.0
    ratio_max: float = 0.8
    ratio_step: float = 0.05
    min_channels: int = 8
    importance: str = "l2"
    ignore: tuple[str, ...] = ()
    round_to: int | None = None
    mask_scope: str = "layer"
    nm: tuple[int, int] = (2, 4)

    #: per layer type (a group's root module class, e.g. Conv2d, Linear) the structures allowed
    #: there; layer types not listed allow ``structures``
    layer_structures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(self.name), f"`name` must be a non-empty string, got {self.name!r}")
        _require(len(self.structures) > 0, "`structures` must list at least one structure")
        for s in self.structures:
            _check_choice("structures", s, STRUCTURES)
        _require(isinstance(self.layer_structures, Mapping),
                 f"`layer_structures` must map layer types to structure lists, got {self.layer_structures!r}")
        for layer_type, allowed in self.layer_structures.items():
            _require(isinstance(allowed, (list, tuple)) and len(allowed) > 0,
                     f"`layer_structures.{layer_type}` must list at least one structure, got {allowed!r}")
            for s in allowed:
                _check_choice(f"layer_structures.{layer_type}", s, STRUCTURES)
        object.__setattr__(self, "layer_structures", {k: tuple(v) for k, v in self.layer_structures.items()})
        _check_number("ratio_min", self.ratio_min, 0.0, 0.99)
        _check_number("ratio_max", self.ratio_max, 0.0, 0.99)
        _require(self.ratio_min <= self.ratio_max,
                 f"`ratio_min` ({self.ratio_min}) must be <= `ratio_max` ({self.ratio_max})")
        _check_number("ratio_step", self.ratio_step, 0.001, 0.5)
        _check_int("min_channels", self.min_channels, 1)
        if self.round_to is not None:
            _check_int("round_to", self.round_to, 1)
        from autoprune.pruning.importance import IMPORTANCES
        from autoprune.pruning.masks import MASK_SCOPES

        _check_choice("importance", self.importance, IMPORTANCES.names())
        _check_choice("mask_scope", self.mask_scope, MASK_SCOPES)
        _require(len(self.nm) == 2 and all(isinstance(v, int) for v in self.nm) and 0 < self.nm[0] < self.nm[1],
                 f"`nm` must be [N, M] with 0 < N < M, got {list(self.nm)}")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """One search: which task, profile, space and agent, and its budget."""

    task: str
    profile: HardwareProfile
    space: SearchSpace
    agent: str = "tpe"
    trials: int = 12
    seed: int = 0
    objectives: tuple[str, ...] = ("accuracy", "latency")
    max_latency_ms: float | None = None
    min_speedup: float = 1.0
    #: overrides of the task's fine-tune recipe (epochs, lr, optimizer, schedule, distill_weight, temperature...)
    finetune: Mapping[str, Any] = field(default_factory=dict)

    #: constraints: a complete trial below ``min_accuracy`` or above ``max_params`` is infeasible
    min_accuracy: float | None = None
    max_params: int | None = None
    #: hypervolume reference point per objective: accuracy as a score, every other objective
    #: as a fraction of the dense model's value (unlisted: accuracy 0.5, others 1.0 = dense)
    reference: Mapping[str, float] = field(default_factory=dict)
    #: weights of the scalar score (the RL reward): sum of weight x normalised objective
    weights: Mapping[str, float] = field(default_factory=dict)
    #: multi-fidelity: share of candidates (ranked by the BN-recalibrated proxy accuracy against
    #: the proxies seen so far) that get the full fine-tune; 1.0 fine-tunes every candidate
    proxy_keep: float = 1.0
    #: candidates always fine-tuned before the proxy ranking starts deciding
    proxy_warmup: int = 4
    #: latency predictor that screens candidates before they are measured: ``auto`` (the one
    #: ``autoprune calibrate`` saved for this profile and task, when it exists), ``off``, or the
    #: path of a predictor JSON; checked when the search starts
    predictor: str = PREDICTOR_AUTO
    #: a candidate is rejected unmeasured only when ``predicted x (1 - predictor_margin)`` still
    #: fails the latency screen (the margin bounds the predictor's error)
    predictor_margin: float = 0.15

    def __post_init__(self) -> None:
        _check_int("trials", self.trials, 1)
        if self.finetune:
            from autoprune.task import FineTuneRecipe

            self.recipe_for(FineTuneRecipe())  # rejects unknown fields and bad values now
        _check_int("seed", self.seed, 0)
        _require(len(self.objectives) >= 1, "`objectives` must name at least one objective")
        for o in self.objectives:
            _check_choice("objectives", o, list(OBJECTIVES))
        _require(len(set(self.objectives)) == len(self.objectives), f"`objectives` repeats a name: {list(self.objectives)}")
        if self.max_latency_ms is not None:
            _check_number("max_latency_ms", self.max_latency_ms, 0.0)
        _check_number("min_speedup", self.min_speedup, 0.0)
        if self.min_accuracy is not None:
            _check_number("min_accuracy", self.min_accuracy, 0.0)
        if self.max_params is not None:
            _check_int("max_params", self.max_params, 1)
        for name, table in (("reference", self.reference), ("weights", self.weights)):
            _require(isinstance(table, Mapping), f"`{name}` must map objective names to numbers, got {table!r}")
            for key, value in table.items():
                _check_choice(f"{name} key", key, list(self.objectives))
                _require(_is_number(value), f"`{name}.{key}` must be a number, got {value!r}")
        _check_number("proxy_keep", self.proxy_keep, 0.01, 1.0)
        _check_int("proxy_warmup", self.proxy_warmup, 0)
        if self.predictor is False:  # YAML reads a bare `off` as false
            object.__setattr__(self, "predictor", PREDICTOR_OFF)
        _require(isinstance(self.predictor, str) and bool(self.predictor.strip()),
                 f"`predictor` must be auto, off or the path of a predictor JSON, got {self.predictor!r}")
        _check_number("predictor_margin", self.predictor_margin, 0.0, 0.99)

    @property
    def round_to(self) -> int:
        return self.space.round_to or self.profile.round_to

    def recipe_for(self, base):
        """The task's recipe ``base`` with this config's ``finetune`` overrides applied."""
        if not self.finetune:
            return base
        return build(type(base), {**dataclasses.asdict(base), **self.finetune}, "finetune")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


C = TypeVar("C")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def build(cls: type[C], data: Mapping[str, Any], source: str) -> C:
    """Build a config dataclass from a mapping, rejecting unknown and missing fields."""
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown field `{unknown[0]}`; valid fields: {', '.join(names)}")
    missing = [n for n, f in names.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data]
    if missing:
        raise ConfigError(f"{source}: missing required field `{missing[0]}`")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    if cls is HardwareProfile and isinstance(values.get("rpc"), Mapping):
        values["rpc"] = build(RpcConfig, _rpc_from_environment(values["rpc"], source), f"{source}: rpc")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from None


#: environment variables that override a profile's ``rpc.host`` / ``rpc.port`` (a board's address
#: changes per lab; the profile stays in git)
RPC_HOST_ENV = "AUTOPRUNE_RPC_HOST"
RPC_PORT_ENV = "AUTOPRUNE_RPC_PORT"


def _rpc_from_environment(rpc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``rpc`` mapping with host/port taken from the environment when set."""
    import os

    merged = dict(rpc)
    if os.environ.get(RPC_HOST_ENV):
        merged["host"] = os.environ[RPC_HOST_ENV]
    if os.environ.get(RPC_PORT_ENV):
        try:
            merged["port"] = int(os.environ[RPC_PORT_ENV])
        except ValueError:
            raise ConfigError(f"{source}: {RPC_PORT_ENV} must be a port number, got {os.environ[RPC_PORT_ENV]!r}") from None
    return merged


def load_profile(path: str | Path) -> HardwareProfile:
    """Load and validate a hardware profile YAML file."""
    path = Path(path)
    return build(HardwareProfile, _read_yaml(path), str(path))


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search space YAML file."""
    path = Path(path)
    return build(SearchSpace, _read_yaml(path), str(path))


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """Where trials run: in-process (1 worker) or on Ray, and each trial's resources.

    ``address`` None with ``workers > 1`` starts a local Ray bound to 127.0.0.1; ``auto`` or
    ``ray://HOST:PORT`` (or ``HOST:PORT``) joins a running cluster.
    """

    workers: int = 1
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 2
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_int("workers", self.workers, 1)
        if self.address is not None:
            _require(isinstance(self.address, str) and bool(self.address),
                     f"`address` must be auto, ray://HOST:PORT or HOST:PORT, got {self.address!r}")
        _check_number("cpus_per_trial", self.cpus_per_trial, 0.0)
        _check_number("gpus_per_trial", self.gpus_per_trial, 0.0)
        _check_int("max_retries", self.max_retries, 0)
        _check_number("connect_timeout_s", self.connect_timeout_s, 0.1)

    @property
    def uses_ray(self) -> bool:
        return self.workers > 1 or self.address is not None


def search_config_from_dict(data: Mapping[str, Any], source: str = "config") -> SearchConfig:
    """Rebuild a SearchConfig from ``SearchConfig.to_dict()`` (a run's config.json, a Ray worker's copy)."""
    try:
        profile = build(HardwareProfile, data["profile"], f"{source}: profile")
        space = build(SearchSpace, data["space"], f"{source}: space")
        rest = {k: v for k, v in data.items() if k not in ("profile", "space")}
        return build(SearchConfig, {**rest, "profile": profile, "space": space}, source)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{source}: not a search config ({type(err).__name__}: {err})") from None


@dataclass(frozen=True, kw_only=True)
class SweepEntry:
    """One search of a sweep: its name (the run folder's) and its resolved SearchConfig."""

    name: str
    search: SearchConfig

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name.replace("-", "").replace("_", "").isalnum(),
                 f"`name` must be letters, digits, - or _ (it names the run folder), got {self.name!r}")

    @property
    def agent(self) -> str:
        return self.search.agent


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """A list of searches run one after another, with shared execution settings (sweeps/*.yaml)."""

    name: str
    searches: tuple[SweepEntry, ...]
    execution: ExecutionConfig = ExecutionConfig()
    accuracy_tolerance: float = 0.01

    def __post_init__(self) -> None:
        _require(len(self.searches) > 0, "`searches` must list at least one search")
        names = [s.name for s in self.searches]
        dup = sorted({n for n in names if names.count(n) > 1})
        _require(not dup, f"`searches`: names must be unique, {dup[0] if dup else ''!r} repeats")
        _check_number("accuracy_tolerance", self.accuracy_tolerance, 0.0, 1.0)


def load_sweep(path: str | Path) -> tuple[SweepConfig, list[SearchConfig]]:
    """Load a sweep and resolve every search's profile and space files (relative to the current folder).

    Each entry of ``searches`` has a ``name``, ``profile`` and ``space`` (YAML paths; space defaults
    to search_spaces/default.yaml) and any SearchConfig field. Every referenced file is loaded
    here, so a missing or invalid one is rejected, by name, before anything runs.

    Returns:
        The sweep and one SearchConfig per entry, in order.
    """
    path = Path(path)
    data = _read_yaml(path)
    entries = data.get("searches")
    _require(isinstance(entries, list), f"{path}: `searches` must be a list of searches")
    searches = []
    for i, entry in enumerate(entries):
        where = f"{path}: searches[{i}]"
        _require(isinstance(entry, Mapping) and "name" in entry and "profile" in entry,
                 f"{where}: each search needs at least `name` and `profile`")
        where = f"{where} ({entry['name']})"
        rest = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
                if k not in ("name", "profile", "space")}
        try:
            search = build(SearchConfig, {**rest, "profile": load_profile(entry["profile"]),
                                          "space": load_space(entry.get("space", "search_spaces/default.yaml"))}, where)
            searches.append(SweepEntry(name=entry["name"], search=search))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}" if not str(err).startswith(where) else str(err)) from None
    execution = build(ExecutionConfig, data.get("execution") or {}, f"{path}: execution")
    sweep = build(SweepConfig, {**data, "searches": tuple(searches), "execution": execution}, str(path))
    return sweep, [entry.search for entry in sweep.searches]

def load_search_settings(path: str | Path) -> dict[str, Any]:
    """The search settings of a YAML search config (``--config``), checked against SearchConfig's fields.

    ``profile`` and ``space`` are paths of their own YAML files; every other key is a
    SearchConfig field. The caller merges command-line flags over these and builds the config.
    """
    path = Path(path)
    data = _read_yaml(path)
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown field `{unknown[0]}`; valid fields: {', '.join(sorted(names))}")
    for key in ("profile", "space"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: `{key}` must be the path of a YAML file, got {data[key]!r}")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
