"""The LatencyBackend ABC: the contract every runtime a profile can name implements.

Call order: ``backend = get_backend(profile)``; ``prepared = backend.prepare(model, x)`` once
per model (export/compile/load); then the protocol calls ``prepared.run(n)`` to time ``n``
inferences. Backends never see the search; the protocol never sees the runtime.

A new backend is one module with a ``LatencyBackend`` subclass plus its line in
``registry.BACKENDS``. A backend with settings of its own declares an ``Options`` dataclass:
the profile's section named after the backend (``tvm:``) is validated by it and reaches the
backend as ``profile.options``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from autoprune.registry import BACKENDS

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs

class Prepared(ABC):
    """A model loaded in a runtime, ready to be timed."""

    #: facts about the prepared model (size on disk, tuned or not, ...) copied into LatencyStats
    info: dict[str, Any]

    @abstractmethod
    def run(self, n: int) -> list[float]:
        """Run ``n`` inferences; return each one's latency in seconds."""


class CallablePrepared(Prepared):
    """Times a zero-argument inference callable with ``perf_counter`` (synchronising inside it)."""

    def __init__(self, infer: Callable[[], Any], info: dict[str, Any] | None = None) -> None:
        self._infer = infer
        self.info = info or {}

    def run(self, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            self._infer()
            samples.append(time.perf_counter() - start)
        return samples


class LatencyBackend(ABC):
    """Prepares models for one runtime as a HardwareProfile describes it."""

    #: the frozen dataclass of this backend's profile section (None: the backend takes none)
    Options: ClassVar[type | None] = None

    def __init__(self, profile: HardwareProfile) -> None:
        self.profile = profile

    @classmethod
    def user_options(cls, section: Mapping[str, Any], source: str) -> Mapping[str, Any]:
        """The section of a user's profile file with environment overrides applied (none by default).

        Called once, when a user's file is loaded; never for a profile recorded in a run folder,
        which must be rebuilt exactly as it was measured.
        """
        return section

    @classmethod
    def runnable_precisions(cls, profile: HardwareProfile) -> tuple[str, ...]:
        """The plan precisions (``plan.PRECISIONS``) this backend quantizes to, evaluates and measures on ``profile``.

        A backend listing more than fp32 implements ``prepare_onnx`` for them (see ``hardware/quantize.py``).
        """
        return ("fp32",)

    @abstractmethod
    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        """Export/compile/load ``model`` for timing at the profile's batch size and input shape."""

    def versions(self) -> dict[str, str]:
        """Library versions that affect this backend's latency (recorded with every measurement)."""
        import torch

        return {"torch": torch.__version__}

    def load_gauge(self) -> Callable[[], float] | None:
        """Reads other processes' CPU use (cores) where this backend measures; None where unknown.

        The default reads this machine (``hardware/load.py``); a backend that measures elsewhere
        (a remote board) returns None, or a gauge of that machine.
        """
        from autoprune.hardware.load import other_cpu

        return other_cpu

    def batch_input(self, example_input: Inputs) -> Inputs:
        """The example input at the profile's batch size (and, for a single image tensor, at the
        profile's ``input_shape`` when it sets one)."""
        import torch

        from autoprune.inputs import repeat_batch

        x = example_input
        if self.profile.input_shape is not None and isinstance(x, torch.Tensor):
            x = torch.randn(1, *self.profile.input_shape, generator=torch.Generator().manual_seed(0))
        return repeat_batch(x, self.profile.batch_size)


def get_backend(profile: HardwareProfile) -> LatencyBackend:
    """Instantiate the profile's backend (BackendUnavailable if its runtime is missing)."""
    backend: LatencyBackend = BACKENDS.get(profile.backend, where=f"hardware profile {profile.name}")(profile)
    return backend
