"""The field checks every validated dataclass uses; each raises a ConfigError naming the field and what is valid.

Callers prefix the file (``build`` in ``config.py``), so a message reads
``hw_profiles/pi4.yaml: `threads` must be an integer >= 1, got 0``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autoprune.errors import ConfigError


def require(ok: bool, message: str) -> None:
    """ConfigError(``message``) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool (YAML's ``yes`` must not pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            f"`{name}` must be an integer >= {minimum}, got {value!r}")


def check_number(name: str, value: Any, low: float, high: float | None = None) -> None:
    ok = is_number(value) and value >= low and (high is None or value <= high)
    bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
    require(ok, f"`{name}` must be a number {bound}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    require(value in choices, f"`{name}` must be one of {', '.join(choices)}, got {value!r}")


def is_list(value: Any) -> bool:
    """A YAML list (a tuple once loaded); a string is not a list of its characters."""
    return isinstance(value, (list, tuple))


def check_list(name: str, value: Any, what: str, item_ok: Any = None) -> None:
    """``value`` is a list (or tuple) whose items all pass ``item_ok``; ``what`` says what it lists."""
    ok = is_list(value) and (item_ok is None or all(item_ok(v) for v in value))
    require(ok, f"`{name}` must be a list of {what}, got {value!r}")


def check_mapping(name: str, value: Any, what: str) -> None:
    require(isinstance(value, Mapping), f"`{name}` must map {what}, got {value!r}")


#: resources Ray defines itself; a profile's measuring resource must be a custom one
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "TPU", "memory", "object_store_memory")


def check_ray_resource(name: str, value: Any) -> None:
    """``value`` can name a Ray custom resource (``ray start --resources '{"NAME": 1}'``): letters, digits and
    ``_ - . : /``, not one of Ray's own resources nor its ``node:``/``accelerator_type:`` prefixes."""
    import re

    ok = (isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.:/-]+", value) is not None
          and value not in RAY_BUILTIN_RESOURCES and not value.startswith(("node:", "accelerator_type:")))
    require(ok, f"`{name}` must name a custom Ray resource (letters, digits, _ - . : /; not "
                f"{', '.join(RAY_BUILTIN_RESOURCES)} nor node:...), got {value!r}")
