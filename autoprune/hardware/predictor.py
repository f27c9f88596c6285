"""A calibrated latency predictor: per-layer latency table + a correction fitted on whole models.

Each distinct Conv/Linear layer shape (channels, kernel, stride, groups, input size) is measured
once, alone, on the profile's backend; a model's *layer sum* is the sum of its layers' table
entries. The sum misses what the runtime does between layers (norms and activations fused or
not, pooling, adds, memory traffic, per-call overhead), so a linear correction
``latency = a * layer_sum + b`` is fitted on a few whole-model measurements. Its error on
held-out plans is measured and stored with it: the search may *screen* with predictions, but
anything that can enter the Pareto front is measured.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.hardware.base import LatencyBackend
    from autoprune.inputs import Inputs


def _layer_key(module: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """A string naming a layer's shape, or None for layers the table does not model."""
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return (f"conv2d in={module.in_channels} out={module.out_channels} k={tuple(module.kernel_size)} "
                f"s={tuple(module.stride)} p={module.padding} d={tuple(module.dilation)} g={module.groups} "
                f"bias={module.bias is not None} x={tuple(input_shape[1:])}")
    if isinstance(module, nn.Linear):
        return f"linear in={module.in_features} out={module.out_features} bias={module.bias is not None} " \
               f"x={tuple(input_shape[1:])}"
    return None


def _layer_module(module: nn.Module) -> nn.Module:
    """A fresh layer with the same configuration (random weights: latency does not depend on them)."""
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, module.bias is not None).eval()
    return nn.Linear(module.in_features, module.out_features, module.bias is not None).eval()


def model_layers(model: nn.Module, example_input: Inputs) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(key, layer, input shape at batch 1) for every modelled layer of one forward pass."""
    import torch

    from autoprune.inputs import call, take

    found: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def hook(module, inputs, _output) -> None:
        key = _layer_key(module, tuple(inputs[0].shape))
        if key is not None:
            found.append((key, module, tuple(inputs[0].shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            call(model.eval(), take(example_input, 1))
    finally:
        for h in handles:
            h.remove()
    return found


def mdape(predicted: list[float], measured: list[float]) -> float:
    """Median absolute percentage error (a fraction: 0.05 is 5%)."""
    return statistics.median(abs(p - m) / m for p, m in zip(predicted, measured, strict=True))


@dataclass(kw_only=True)
class LatencyPredictor:
    """The layer table, the fitted correction and the held-out error, for one profile."""

    profile: str
    table: dict[str, float] = field(default_factory=dict)
    slope: float = 1.0
    intercept: float = 0.0
    fit_measurements: int = 0
    holdout_mdape: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    _backend: LatencyBackend | None = field(default=None, repr=False, compare=False)
    _input_shape: tuple[int, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_profile(cls, profile: HardwareProfile) -> LatencyPredictor:
        from autoprune.hardware.protocol import measurement_versions

        backend = _layer_backend(profile)
        return cls(profile=profile.name, versions=measurement_versions(backend), _backend=backend,
                   _input_shape=profile.input_shape)

    def bind(self, profile: HardwareProfile) -> LatencyPredictor:
        """Attach the profile's backend so layers missing from the table can be measured."""
        self._backend = _layer_backend(profile)
        self._input_shape = profile.input_shape
        return self

    def _model_input(self, example_input: Inputs) -> Inputs:
        """The model's input at batch 1, at the profile's input shape when it sets one (single image tensors)."""
        import torch

        from autoprune.inputs import take

        if self._input_shape is None or not isinstance(example_input, torch.Tensor):
            return take(example_input, 1)
        return _resized(self._input_shape)

    def layer_sum(self, model: nn.Module, example_input: Inputs) -> float:
        """Sum of the table latencies (ms) of the model's layers, measuring unseen shapes once."""
        import torch

        from autoprune.hardware.protocol import time_prepared

        total = 0.0
        for key, module, shape in model_layers(model, self._model_input(example_input)):
            if key not in self.table:
                assert self._backend is not None, "bind() the predictor to a profile first"
                x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
                prepared = self._backend.prepare(_layer_module(module), x)
                self.table[key] = time_prepared([prepared], self._backend)[0].median_ms
            total += self.table[key]
        return total

    def fit(self, layer_sums: list[float], measured_ms: list[float]) -> None:
        """Least-squares ``measured = slope * layer_sum + intercept`` (needs >= 2 distinct sums)."""
        import numpy as np

        a = np.stack([np.asarray(layer_sums), np.ones(len(layer_sums))], axis=1)
        (self.slope, self.intercept), *_ = np.linalg.lstsq(a, np.asarray(measured_ms), rcond=None)
        self.slope, self.intercept = float(self.slope), float(self.intercept)
        self.fit_measurements = len(measured_ms)

    def predict(self, model: nn.Module, example_input: Inputs) -> float:
        """Predicted median latency (ms) of ``model`` on the profile."""
        return self.slope * self.layer_sum(model, example_input) + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}

    def save(self, path: str | Path) -> Path:
        from autoprune.files import atomic_write_json

        return atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], profile: HardwareProfile | None = None,
                  source: str = "predictor") -> LatencyPredictor:
        """Rebuild from ``to_dict()``; bound to ``profile`` when given, which must be the one it was calibrated on.

        Raises:
            ConfigError: ``data`` is not a predictor, or it was calibrated on another profile
                (its table and correction describe that profile's runtime, not this one's).
        """
        from autoprune.errors import ConfigError

        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        if not isinstance(data, dict) or "profile" not in data or not set(data) <= names:
            raise ConfigError(f"{source}: not a latency predictor (expected the JSON `autoprune calibrate` writes)")
        from autoprune.validation import is_number

        checks = {"profile": isinstance(data.get("profile"), str),
                  "table": isinstance(data.get("table", {}), dict)
                  and all(isinstance(k, str) and is_number(v) for k, v in data.get("table", {}).items()),
                  "slope": is_number(data.get("slope", 1.0)), "intercept": is_number(data.get("intercept", 0.0)),
                  "fit_measurements": isinstance(data.get("fit_measurements", 0), int),
                  "holdout_mdape": data.get("holdout_mdape") is None or is_number(data.get("holdout_mdape")),
                  "versions": isinstance(data.get("versions", {}), dict)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"{source}: not a latency predictor (`{bad[0]}` has the wrong type: "
                              f"{data.get(bad[0])!r}); calibrate it again with `autoprune calibrate`")
        predictor = cls(**data)
        if profile is None:
            return predictor
        if predictor.profile != profile.name:
            raise ConfigError(f"{source}: calibrated on profile {predictor.profile!r}, not {profile.name!r}; calibrate "
                              f"one for {profile.name!r} (`autoprune calibrate --task TASK --hw PROFILE.yaml`) or turn "
                              f"screening off (--predictor off)")
        return predictor.bind(profile)

    @classmethod
    def load(cls, path: str | Path, profile: HardwareProfile | None = None) -> LatencyPredictor:
        """Read a saved predictor (see ``from_dict``); ConfigError naming ``path`` when it is missing or not one."""
        from autoprune.errors import ConfigError

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: file not found (a latency predictor JSON from `autoprune calibrate`)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, profile, str(path))


def _resized(shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))


def _layer_backend(profile: HardwareProfile) -> LatencyBackend:
    """The profile's backend at batch 1 without an input override (a layer gets its own input)."""
    from autoprune.hardware.base import get_backend

    return get_backend(dataclasses.replace(profile, input_shape=None))


def default_predictor_path(profile: HardwareProfile, task: str) -> Path:
    safe = task.replace(":", "_").replace("/", "_")
    return Path("results/.cache/predictors") / f"{profile.name}--{safe}.json"


@dataclass(frozen=True, kw_only=True)
class PredictorChoice:
    """Which predictor screens a search's candidates, and where it came from.

    Attributes:
        predictor: the loaded predictor, bound to the profile; None when nothing screens.
        path: the file it was loaded from (for ``auto`` without one: the default path looked at).
        setting: the config's ``predictor`` value (``auto``, ``off`` or a path).
    """

    predictor: LatencyPredictor | None
    path: Path | None
    setting: str


def choose_predictor(setting: str, profile: HardwareProfile, task: str) -> PredictorChoice:
    """Resolve ``SearchConfig.predictor``: ``off``; ``auto`` (the default path's predictor when it exists); a path.

    Raises:
        ConfigError: the file is missing (a named path), unreadable, not a predictor, or from another profile.
    """
    from autoprune.config import PREDICTOR_AUTO, PREDICTOR_OFF

    if setting == PREDICTOR_OFF:
        return PredictorChoice(predictor=None, path=None, setting=setting)
    path = default_predictor_path(profile, task) if setting == PREDICTOR_AUTO else Path(setting)
    if setting == PREDICTOR_AUTO and not path.is_file():
        return PredictorChoice(predictor=None, path=path, setting=setting)
    return PredictorChoice(predictor=LatencyPredictor.load(path, profile), path=path, setting=setting)
