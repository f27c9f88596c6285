"""PyTorch eager backend (CPU with a fixed thread count, or CUDA with synchronisation)."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from autoprune.errors import BackendUnavailable
from autoprune.hardware.base import CallablePrepared, LatencyBackend, Prepared

if TYPE_CHECKING:
    from torch import nn

    from autoprune.inputs import Inputs


class TorchEagerBackend(LatencyBackend):
    """Runs the module itself under ``torch.inference_mode``."""

    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        import torch

        device = torch.device(self.profile.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"hardware profile {self.profile.name}: CUDA is not available to torch")
        from autoprune.inputs import call, map_tensors

        dtype = torch.float16 if self.profile.precision == "fp16" else torch.float32
        runnable = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
        x = map_tensors(self.batch_input(example_input),  # token ids stay integers
                        lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype))

        def infer() -> None:
            with torch.inference_mode():
                call(runnable, x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        size = sum(p.numel() * p.element_size() for p in runnable.parameters())
        info = {"model_bytes": size}
        if device.type == "cuda":  # the allocator's peak, not the process RSS, is the session's memory
            torch.cuda.reset_peak_memory_stats(device)
            infer()
            info["session_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
        return _ThreadPinned(infer, self.profile.threads, info=info)


class _ThreadPinned(CallablePrepared):
    """Runs timed batches with torch's intra-op thread count fixed to the profile's."""

    def __init__(self, infer, threads: int, info: dict) -> None:
        super().__init__(infer, info)
        self._threads = threads

    def run(self, n: int) -> list[float]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            return super().run(n)
        finally:
            torch.set_num_threads(previous)
