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
from typing import TYPE_CHECKING, Any, TypeVar

from autoprune.errors import ConfigError
from autoprune.plan import PRECISIONS as PLAN_PRECISIONS
from autoprune.plan import STRUCTURES, PrunerSettings
from autoprune.registry import AGENTS, BACKENDS
from autoprune.validation import (
    check_choice,
    check_int,
    check_list,
    check_mapping,
    check_number,
    check_ray_resource,
    is_number,
    require,
)

if TYPE_CHECKING:
    from autoprune.task import FineTuneRecipe, Task, TaskSpec

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
#: the ``SearchConfig.predictor`` values that name no file
PREDICTOR_AUTO, PREDICTOR_OFF = "auto", "off"
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "latency_p90": "minimize",
              "params": "minimize", "macs": "minimize", "memory": "minimize"}


@dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """One target device and how latency is measured on it (hw_profiles/*.yaml).

    A backend with options of its own (TVM's target, tuning and RPC board) reads them from the
    section named after it (``tvm:``); its ``Options`` class validates them and they arrive here
    as ``options``. ``to_dict`` writes them back under that name.
    """

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
    #: a candidate whose latency stays noisy (CV > max_cv after max_remeasure) is measured again later,
    #: up to this many times, before its trial completes
    noisy_retries: int = 2
    #: before timing, wait up to this long for other processes' CPU use to drop to ``max_other_cpu`` (0: never wait)
    load_wait_s: float = 0.0
    #: other processes' CPU use (cores) a measurement tolerates; None: the cores it does not use, less half a core
    max_other_cpu: float | None = None
    round_to: int = 8
    fast_structures: tuple[str, ...] = ("channel",)
    #: the Ray custom resource of the node that measures this device (None: ``autoprune_measure_<name>``);
    #: placement only, so it is neither part of a measurement's cache key nor written when unset
    ray_resource: str | None = None
    #: the backend's own section, an instance of its ``Options`` class (None: the backend's defaults)
    options: Any = None

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), f"`name` must be a non-empty string, got {self.name!r}")
        check_choice("backend", self.backend, BACKENDS.names())
        check_choice("device", self.device, DEVICES)
        check_int("threads", self.threads, 1)
        check_int("batch_size", self.batch_size, 1)
        if self.input_shape is not None:
            check_list("input_shape", self.input_shape, "positive integers (e.g. [3, 224, 224])",
                       lambda d: isinstance(d, int) and not isinstance(d, bool) and d > 0)
        check_choice("precision", self.precision, PRECISIONS)
        require(self.precision == "fp32" or self.device == "cuda", "`precision` fp16 needs `device: cuda`")
        check_number("warmup_s", self.warmup_s, 0.0)
        check_int("min_runs", self.min_runs, 1)
        check_int("repeats", self.repeats, 1)
        check_number("max_cv", self.max_cv, 0.0, 10.0)
        check_int("max_remeasure", self.max_remeasure, 0)
        check_int("noisy_retries", self.noisy_retries, 0)
        check_number("load_wait_s", self.load_wait_s, 0.0)
        if self.max_other_cpu is not None:
            check_number("max_other_cpu", self.max_other_cpu, 0.0)
        check_int("round_to", self.round_to, 1)
        check_list("fast_structures", self.fast_structures, f"structures ({', '.join(STRUCTURES)})")
        for s in self.fast_structures:
            check_choice("fast_structures", s, STRUCTURES)
        if self.ray_resource is not None:
            check_ray_resource("ray_resource", self.ray_resource)
        if self.options is not None:
            expected = BACKENDS.get(self.backend).Options
            require(expected is not None and isinstance(self.options, expected),
                    f"`{self.backend}` options must be {getattr(expected, '__name__', 'absent')}, "
                    f"got {type(self.options).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data; its backend's options under the backend's name (``profile_from_dict``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        if self.ray_resource is None:
            del data["ray_resource"]  # records and cache keys of profiles without one stay as they were
        if self.options is not None:
            data[self.backend] = dataclasses.asdict(self.options)
        return data


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
    #: the precisions a plan may ship in (``plan.PRECISIONS``); each must be one the profile's
    #: backend runs (``SearchConfig`` checks it). More than one makes precision a searched choice.
    precisions: tuple[str, ...] = ("fp32",)
    #: layer-name globs (module names, as ``ignore``; a group's name is its root layer's) whose layers a
    #: quantized plan keeps in fp32 (first and last layers often lose the most accuracy in int8); each must
    #: match a layer of the model, checked when the search starts
    keep_fp32: tuple[str, ...] = ()
    #: False: every quantized plan keeps all of ``keep_fp32`` in fp32. True: the agent searches, per glob,
    #: whether a quantized plan keeps its layers in fp32 (one yes/no parameter each)
    search_keep_fp32: bool = False

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), f"`name` must be a non-empty string, got {self.name!r}")
        check_list("structures", self.structures, f"structures ({', '.join(STRUCTURES)})")
        require(isinstance(self.precisions, tuple) and len(self.precisions) > 0,
                f"`precisions` must list at least one precision, got {self.precisions!r}")
        for p in self.precisions:
            check_choice("precisions", p, PLAN_PRECISIONS)
        require(len(set(self.precisions)) == len(self.precisions), f"`precisions` repeats one: {list(self.precisions)}")
        check_list("keep_fp32", self.keep_fp32, "layer-name globs", lambda v: isinstance(v, str) and bool(v))
        require(not self.keep_fp32 or any(p != "fp32" for p in self.precisions),
                "`keep_fp32` applies to quantized plans, but `precisions` lists only fp32: "
                "add int8 (CPU) or fp16 (CUDA) to `precisions`, or drop `keep_fp32`")
        require(isinstance(self.search_keep_fp32, bool),
                f"`search_keep_fp32` must be true or false, got {self.search_keep_fp32!r}")
        require(not self.search_keep_fp32 or bool(self.keep_fp32),
                "`search_keep_fp32` needs `keep_fp32` to list the layer-name globs to search")
        require(len(self.structures) > 0, "`structures` must list at least one structure")
        for s in self.structures:
            check_choice("structures", s, STRUCTURES)
        check_mapping("layer_structures", self.layer_structures, "layer types to structure lists")
        for layer_type, allowed in self.layer_structures.items():
            check_list(f"layer_structures.{layer_type}", allowed, f"structures ({', '.join(STRUCTURES)})")
            require(len(allowed) > 0,
                     f"`layer_structures.{layer_type}` must list at least one structure, got {allowed!r}")
            for s in allowed:
                check_choice(f"layer_structures.{layer_type}", s, STRUCTURES)
        object.__setattr__(self, "layer_structures", {k: tuple(v) for k, v in self.layer_structures.items()})
        check_number("ratio_min", self.ratio_min, 0.0, 0.99)
        check_number("ratio_max", self.ratio_max, 0.0, 0.99)
        require(self.ratio_min <= self.ratio_max,
                 f"`ratio_min` ({self.ratio_min}) must be <= `ratio_max` ({self.ratio_max})")
        check_number("ratio_step", self.ratio_step, 0.001, 0.5)
        # the pruner's fields are checked by the settings they become (round_to: the profile's when unset)
        PrunerSettings(round_to=1 if self.round_to is None else self.round_to, min_channels=self.min_channels,
                       importance=self.importance, ignore=self.ignore, nm=self.nm, mask_scope=self.mask_scope)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """One search: which task, profile, space and agent, and its budget.

    ``task`` with ``data``, ``model_weights`` (``--weights``) and ``input_size`` is the task's spec
    (``task_spec``): a relative ``data`` path, or a ``model_weights`` path that exists, is made
    absolute here, so a worker or a later ``report``/``export`` in another folder rebuilds the same task.
    """

    task: str
    profile: HardwareProfile
    space: SearchSpace
    #: the task's data: an ImageFolder tree (images), a CSV/JSONL file or folder (text), or what a
    #: ``module:function`` task takes as ``data``
    data: str | None = None
    #: a checkpoint file, a model library's weights name, or ``none`` (``--weights``)
    model_weights: str | None = None
    #: image side in pixels, or text length in tokens (default: the task source's rule)
    input_size: int | None = None
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
    #: multi-fidelity: share of candidates that get the full fine-tune, ranked against the candidates screened
    #: so far by how many beat them on both proxy accuracy and speed-up (``search/fidelity.py``); 1.0: every one
    proxy_keep: float = 1.0
    #: candidates always fine-tuned before the proxy ranking starts deciding
    proxy_warmup: int = 4
    #: the first ``warm_start`` trials of a sampler agent (tpe, nsga2, random) are the baselines' plans:
    #: uniform width ratios interleaved with depth plans (``autoprune.search.warm_start``); None: the agent's
    #: default (its factory's ``default_warm_start``: 4 for tpe, measured in README "Does the search pay?"; else 0)
    warm_start: int | None = None
    #: latency predictor that screens candidates before they are measured: ``auto`` (the one
    #: ``autoprune calibrate`` saved for this profile and task, when it exists), ``off``, or the
    #: path of a predictor JSON; checked when the search starts
    predictor: str = PREDICTOR_AUTO
    #: a candidate is rejected unmeasured only when ``predicted x (1 - predictor_margin)`` still
    #: fails the latency screen (the margin bounds the predictor's error)
    predictor_margin: float = 0.15

    def __post_init__(self) -> None:
        require(isinstance(self.task, str) and bool(self.task), f"`task` must be a non-empty string, got {self.task!r}")
        from autoprune.task import absolute_task_name

        object.__setattr__(self, "task", absolute_task_name(self.task))
        for key in ("data", "model_weights"):
            value = getattr(self, key)
            require(value is None or (isinstance(value, str) and bool(value)),
                    f"`{key}` must be a path or name, got {value!r}")
        if self.data is not None:
            object.__setattr__(self, "data", str(Path(self.data).expanduser().absolute()))
        if self.model_weights is not None and Path(self.model_weights).expanduser().exists():
            object.__setattr__(self, "model_weights", str(Path(self.model_weights).expanduser().absolute()))
        if self.input_size is not None:
            check_int("input_size", self.input_size, 1)
        check_choice("agent", self.agent, AGENTS.names())
        runs = runnable_precisions(self.profile)
        for p in self.space.precisions:
            require(p in runs, f"search space {self.space.name}: `precisions` lists {p}, which hardware profile "
                               f"{self.profile.name} (backend {self.profile.backend}, {self.profile.device}) cannot "
                               f"run; it runs {', '.join(runs)}")
        check_int("trials", self.trials, 1)
        check_mapping("finetune", self.finetune, "fine-tune recipe fields to values (e.g. {epochs: 3})")
        if self.finetune:
            from autoprune.task import FineTuneRecipe

            self.recipe_for(FineTuneRecipe())  # rejects unknown fields and bad values now
        check_int("seed", self.seed, 0)
        check_list("objectives", self.objectives, f"objectives ({', '.join(OBJECTIVES)})")
        require(len(self.objectives) >= 1, "`objectives` must name at least one objective")
        for o in self.objectives:
            check_choice("objectives", o, list(OBJECTIVES))
        require(len(set(self.objectives)) == len(self.objectives),
                f"`objectives` repeats a name: {list(self.objectives)}")
        if self.max_latency_ms is not None:
            check_number("max_latency_ms", self.max_latency_ms, 0.0)
        check_number("min_speedup", self.min_speedup, 0.0)
        if self.min_accuracy is not None:
            check_number("min_accuracy", self.min_accuracy, 0.0)
        if self.max_params is not None:
            check_int("max_params", self.max_params, 1)
        for name, table in (("reference", self.reference), ("weights", self.weights)):
            require(isinstance(table, Mapping), f"`{name}` must map objective names to numbers, got {table!r}")
            for key, value in table.items():
                check_choice(f"{name} key", key, list(self.objectives))
                require(is_number(value), f"`{name}.{key}` must be a number, got {value!r}")
        check_number("proxy_keep", self.proxy_keep, 0.01, 1.0)
        check_int("proxy_warmup", self.proxy_warmup, 0)
        if self.warm_start is not None:
            check_int("warm_start", self.warm_start, 0)
        if self.predictor is False:  # YAML reads a bare `off` as false
            object.__setattr__(self, "predictor", PREDICTOR_OFF)
        require(isinstance(self.predictor, str) and bool(self.predictor.strip()),
                 f"`predictor` must be auto, off or the path of a predictor JSON, got {self.predictor!r}")
        check_number("predictor_margin", self.predictor_margin, 0.0, 0.99)

    @property
    def pruner(self) -> PrunerSettings:
        """The pruner's settings for this search (built from the space and the profile)."""
        return pruner_settings(self.space, self.profile)

    def recipe_for(self, base: FineTuneRecipe) -> FineTuneRecipe:
        """The task's recipe ``base`` with this config's ``finetune`` overrides applied."""
        if not self.finetune:
            return base
        return build(type(base), {**dataclasses.asdict(base), **self.finetune}, "finetune")

    @property
    def task_spec(self) -> TaskSpec:
        """What rebuilds the search's task (name, data, weights, input size)."""
        from autoprune.task import TaskSpec

        return TaskSpec(name=self.task, data=self.data, weights=self.model_weights, input_size=self.input_size)

    def trial_task(self) -> Task:
        """The search's task (resolved from its spec) with its fine-tune recipe overridden by ``finetune``."""
        from autoprune.task import resolve_task

        task = resolve_task(self.task_spec)
        return dataclasses.replace(task, recipe=self.recipe_for(task.recipe))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a run's ``config.json``); ``search_config_from_dict`` reads it back."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "profile": self.profile.to_dict(), "space": dataclasses.asdict(self.space)}


def runnable_precisions(profile: HardwareProfile) -> tuple[str, ...]:
    """The plan precisions the profile's backend can quantize to, evaluate and measure."""
    runs: tuple[str, ...] = BACKENDS.get(profile.backend).runnable_precisions(profile)
    return runs


def pruner_settings(space: SearchSpace, profile: HardwareProfile) -> PrunerSettings:
    """The pruner's settings of a space on a profile: channels rounded as the space says, else as the profile does."""
    return PrunerSettings(round_to=space.round_to or profile.round_to, min_channels=space.min_channels,
                          importance=space.importance, ignore=tuple(space.ignore), nm=space.nm,
                          mask_scope=space.mask_scope)


C = TypeVar("C")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          "save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def build(cls: type[C], data: Mapping[str, Any], source: str) -> C:
    """Build a config dataclass from a mapping, rejecting unknown and missing fields."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of fields, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown field `{unknown[0]}`; valid fields: {', '.join(names)}")
    missing = [n for n, f in names.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data]
    if missing:
        raise ConfigError(f"{source}: missing required field `{missing[0]}`")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from None


def _profile(data: Mapping[str, Any], source: str, *, from_user: bool) -> HardwareProfile:
    """A HardwareProfile from a mapping; the backend's own section (named after it) goes to its ``Options``.

    ``from_user``: the mapping is a user's profile file, so the backend may apply environment
    overrides (e.g. TVM's RPC address); a recorded profile is rebuilt exactly as recorded.
    """
    values = dict(data)
    backend = values.get("backend")
    if isinstance(backend, str) and backend in BACKENDS:
        require("options" not in values, f"{source}: unknown field `options`; a backend's options go in its "
                                          f"section, `{backend}:`")
        values["options"] = _backend_options(values, backend, source, from_user=from_user)
    return build(HardwareProfile, values, source)  # an unknown backend is named by HardwareProfile's check


def _backend_options(values: dict[str, Any], backend: str, source: str, *, from_user: bool) -> Any:
    """Pop the backend's section from ``values`` and build its ``Options`` (None for a backend without any).

    The section's fields are also taken from the top level (the layout before backends owned a
    section); a section named after another backend is an error.
    """
    for other in BACKENDS.names():
        require(other == backend or other not in values,
                f"{source}: the `{other}` section only applies to `backend: {other}`, not {backend}")
    plugin = BACKENDS.get(backend)
    section = values.pop(backend, None)
    require(section is None or isinstance(section, Mapping),
            f"{source}: the `{backend}` section must map its fields to values, got {section!r}")
    if plugin.Options is None:
        require(section is None, f"{source}: backend {backend} takes no `{backend}` section")
        return None
    own = {f.name for f in dataclasses.fields(plugin.Options)}
    merged = {**{k: values.pop(k) for k in list(values) if k in own}, **(section or {})}
    if from_user:
        merged = dict(plugin.user_options(merged, source))
    return build(plugin.Options, merged, f"{source}: {backend}")


#: the built-in profiles and spaces ship inside the package (the repository's folders link here)
PACKAGE_DIR = Path(__file__).resolve().parent
PROFILES_DIR, SPACES_DIR = "hw_profiles", "search_spaces"


def builtin_names(folder: str) -> list[str]:
    """The built-in files of ``folder`` (``hw_profiles`` or ``search_spaces``) by name (``cpu-onnxruntime``)."""
    return sorted(p.stem for p in (PACKAGE_DIR / folder).glob("*.yaml"))


def locate(path_or_name: str | Path, folder: str) -> Path:
    """A YAML file by path, or a built-in one by name from any folder.

    ``cpu-onnxruntime``, ``cpu-onnxruntime.yaml`` and ``hw_profiles/cpu-onnxruntime.yaml`` name the
    built-in profile when no such file exists here; an existing file always wins.

    Raises:
        ConfigError: neither a file nor a built-in name (the message lists the built-in names).
    """
    path = Path(path_or_name).expanduser()
    if path.exists():  # a file, or a folder that the reader names as such
        return path
    if path.parent in (Path("."), Path(folder)) and path.suffix in ("", ".yaml"):
        builtin = PACKAGE_DIR / folder / f"{path.stem if path.suffix else path.name}.yaml"
        if builtin.is_file():
            return builtin
    raise ConfigError(f"{path_or_name}: file not found; give a YAML path or a built-in name: "
                      f"{', '.join(builtin_names(folder))}")


def is_builtin_name(value: str, folder: str) -> bool:
    """``value`` is a bare built-in name (``cpu-onnxruntime``), not a path."""
    return "/" not in value and Path(value).stem in builtin_names(folder) and not Path(value).is_file()


def load_profile(path: str | Path) -> HardwareProfile:
    """Load and validate a user's hardware profile (a YAML path or a built-in name; environment overrides apply)."""
    path = locate(path, PROFILES_DIR)
    return _profile(_read_yaml(path), str(path), from_user=True)


#: the TVM keys every profile recorded before backends owned a section held at the top level, and
#: their values on a profile of another backend (a run folder of an older autoprune)
LEGACY_UNSET_KEYS = {"target": None, "tuning_trials": 0, "tuning_db": None, "cross_compiler": None, "rpc": None}


def profile_from_dict(data: Mapping[str, Any], source: str = "profile") -> HardwareProfile:
    """Rebuild a recorded profile (``HardwareProfile.to_dict()``) exactly as recorded: no environment override.

    A profile recorded by an older autoprune holds TVM's keys at the top level; unset on another
    backend, they are dropped (on a TVM profile they are its section's, as in any profile file).
    """
    values = {k: v for k, v in data.items() if data.get("backend") == "tvm" or LEGACY_UNSET_KEYS.get(k, ...) != v}
    return _profile(values, source, from_user=False)


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search space (a YAML path or a built-in name such as ``default``)."""
    path = locate(path, SPACES_DIR)
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
        check_int("workers", self.workers, 1)
        if self.address is not None:
            require(isinstance(self.address, str) and bool(self.address),
                     f"`address` must be auto, ray://HOST:PORT or HOST:PORT, got {self.address!r}")
        check_number("cpus_per_trial", self.cpus_per_trial, 0.0)
        check_number("gpus_per_trial", self.gpus_per_trial, 0.0)
        check_int("max_retries", self.max_retries, 0)
        check_number("connect_timeout_s", self.connect_timeout_s, 0.1)

    @property
    def uses_ray(self) -> bool:
        return self.workers > 1 or self.address is not None


def search_config_from_dict(data: Mapping[str, Any], source: str = "config") -> SearchConfig:
    """Rebuild a SearchConfig from ``SearchConfig.to_dict()`` (a run's config.json, a Ray worker's copy)."""
    try:
        profile = profile_from_dict(data["profile"], f"{source}: profile")
        space = build(SearchSpace, data["space"], f"{source}: space")
        rest = {k: v for k, v in data.items() if k not in ("profile", "space")}
        return build(SearchConfig, {**rest, "profile": profile, "space": space}, source)
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{source}: not a search config ({type(err).__name__}: {err})") from None


@dataclass(frozen=True, kw_only=True)
class SweepEntry:
    """One search of a sweep: its name (the run folder's) and its resolved SearchConfig."""

    name: str
    search: SearchConfig

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and self.name.replace("-", "").replace("_", "").isalnum(),
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
        check_list("searches", self.searches, "searches")
        require(len(self.searches) > 0, "`searches` must list at least one search")
        names = [s.name for s in self.searches]
        dup = sorted({n for n in names if names.count(n) > 1})
        require(not dup, f"`searches`: names must be unique, {dup[0] if dup else ''!r} repeats")
        check_number("accuracy_tolerance", self.accuracy_tolerance, 0.0, 1.0)


def load_sweep(path: str | Path) -> tuple[SweepConfig, list[SearchConfig]]:
    """Load a sweep and resolve every search's profile and space files (relative to the current folder).

    Each entry of ``searches`` has a ``name``, ``profile`` and ``space`` (YAML paths; space defaults
    to the built-in ``default``) and any SearchConfig field. Every referenced file is loaded
    here, so a missing or invalid one is rejected, by name, before anything runs.

    Returns:
        The sweep and one SearchConfig per entry, in order.
    """
    path = Path(path)
    data = _read_yaml(path)
    entries = data.get("searches")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `searches` must be a list of searches")
    searches = []
    for i, entry in enumerate(entries):
        where = f"{path}: searches[{i}]"
        require(isinstance(entry, Mapping) and "name" in entry and "profile" in entry,
                 f"{where}: each search needs at least `name` and `profile`")
        where = f"{where} ({entry['name']})"
        for key in ("profile", "space"):
            require(isinstance(entry.get(key, ""), str), f"{where}: `{key}` must be the path of a YAML file, "
                                                         f"got {entry.get(key)!r}")
        rest = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
                if k not in ("name", "profile", "space")}
        try:
            search = build(SearchConfig, {**rest, "profile": load_profile(entry["profile"]),
                                          "space": load_space(entry.get("space", "default"))}, where)
            searches.append(SweepEntry(name=entry["name"], search=search))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}" if not str(err).startswith(where) else str(err)) from None
    require(isinstance(data.get("execution") or {}, Mapping),
            f"{path}: `execution` must map execution settings (workers, cpus_per_trial...) to values, "
            f"got {data.get('execution')!r}")
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
