from __future__ import annotations

import sys

import pytest

from autoprune.errors import ConfigError
from autoprune.registry import AGENTS, BACKENDS, EXPORTERS, IMPORTANCES, TASKS, Registry
from autoprune.task import resolve_task


def test_unknown_name_lists_valid_names() -> None:
    registry: Registry[int] = Registry("widget", {"c": "math:pi"})
    registry.register("a")(1)
    registry.register("b")(2)
    assert registry.get("b") == 2 and registry.names() == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="where: unknown widget 'd'; valid: a, b, c"):
        registry.get("d", where="where")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("c")(3)


def test_builtins_are_named_without_importing_them() -> None:
    registry: Registry[object] = Registry("thing", {"x": "autoprune_no_such_module:X"})
    assert registry.names() == ["x"] and "x" in registry
    assert "autoprune_no_such_module" not in sys.modules


@pytest.mark.parametrize("registry", [AGENTS, BACKENDS, IMPORTANCES, TASKS, EXPORTERS])
def test_every_builtin_plugin_resolves(registry: Registry) -> None:
    for name in registry.names():
        assert registry.get(name) is not None


@pytest.mark.parametrize("spec, message", [
    ("nosuchtask", "unknown task 'nosuchtask'; valid: digits"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("tests.tiny_task:missing", "has no callable 'missing'"),
    ("tests.tiny_task:not_a_task", "returned int, expected autoprune.Task"),
])
def test_task_resolution_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_task(spec)
    assert message in str(err.value)


def test_module_function_task_resolves() -> None:
    assert resolve_task("tests.tiny_task:tiny_task").name == "tiny"
