"""The tiny task whose loss notes the wall time of every fine-tune step (``tests.gate_task:gate_task``).

Each process appends to ``$AUTOPRUNE_TEST_STEPS/steps-<pid>.txt``, so a test can check from outside
when training ran (``tests/execution/test_core_gate.py``).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from autoprune.task import Task, cross_entropy
from tests.tiny_task import tiny_task

STEPS_ENV = "AUTOPRUNE_TEST_STEPS"


def _noting_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    folder = os.environ.get(STEPS_ENV)
    if folder:
        with open(Path(folder) / f"steps-{os.getpid()}.txt", "a", encoding="utf-8") as f:
            f.write(f"{time.time()}\n")
    return cross_entropy(logits, targets)


def gate_task() -> Task:
    return dataclasses.replace(tiny_task(), name="gate", loss=_noting_loss)
