from __future__ import annotations

import pytest

from autoprune.errors import ConfigError
from autoprune.registry import Registry
from autoprune.search.agent import AGENTS
from autoprune.task import resolve_task


def test_unknown_name_lists_valid_names() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    registry.register("b")(2)
    assert registry.get("b") == 2
    with pytest.raises(ConfigError, match="unknown widget 'c'; valid: a, b"):
        registry.get("c")


def test_builtin_agents_load_lazily() -> None:
    assert {"tpe", "random"} <= set(AGENTS.names())


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
