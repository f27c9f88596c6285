"""A plain ``pip install autoprune`` (no extras) measures latency.

``make`` installs ``.[all]``, so every optional library is present in the test environment and a
base-install gap (psutil used to live only in the ``tvm`` extra) never shows. This test runs
``autoprune profile`` in a subprocess where every module outside the standard library and the
distributions the base requirements pull in (transitively, from the installed metadata) raises
``ModuleNotFoundError``, as it would in a venv built from the wheel with base dependencies only.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys

import tomllib

from tests.conftest import ROOT

#: the extras section of a requirement marker (``extra == "tvm"``): such requirements are optional
EXTRA = re.compile(r"extra\s*==")


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=!~]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def base_distributions() -> set[str]:
    """The distributions a base install brings: the base requirements and, transitively, theirs."""
    pending = [_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        pending.extend(_name(r) for r in requires if not EXTRA.search(r.split(";", 1)[1] if ";" in r else ""))
    return seen


def base_modules() -> set[str]:
    """Top-level import names provided by the base distributions."""
    dists = base_distributions()
    return {module for module, owners in md.packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners)}


BLOCKER = """
import json, sys
ALLOWED = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names) | {"autoprune", "tests"}
class Hide:
    # a finder that does not find what a base install lacks (for imports and find_spec alike)
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in ALLOWED and not top.startswith("_"):
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from autoprune.cli import main
sys.exit(main(["profile", "--task", "tests.tiny_task:tiny_task", "--hw", "hw_profiles/cpu-onnxruntime.yaml"]))
"""


def test_base_install_measures_latency(tmp_path) -> None:
    allowed = sorted(base_modules())
    assert "torch" in allowed and "onnxruntime" in allowed
    assert "tvm" not in allowed and "ray" not in allowed  # extras stay out: the check is real
    env = {"PATH": "/usr/bin:/bin", "AUTOPRUNE_LATENCY_CACHE": "off", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(allowed)], check=False, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "p50 ms" in run.stdout
