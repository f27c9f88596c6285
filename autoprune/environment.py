"""Library versions and a machine fingerprint, recorded with every run and measurement."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform

LIBRARIES = ("autoprune", "torch", "torch-pruning", "onnxruntime", "onnx", "apache-tvm", "optuna", "ray", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour affects results (missing ones omitted)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fingerprint() -> dict[str, str]:
    """What identifies the machine a number was measured on, plus a short stable id."""
    facts = {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
             "cpu": _cpu_model(), "cores": str(os.cpu_count())}
    facts["id"] = hashlib.sha256(repr(sorted(facts.items())).encode()).hexdigest()[:12]
    return facts
