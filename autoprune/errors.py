"""The few exception types a user can meet. The CLI prints their message in one line and exits 2."""
from __future__ import annotations


class AutopruneError(Exception):
    """Base of every error caused by user input or environment, never by a bug."""


class ConfigError(AutopruneError):
    """A YAML file, CLI flag or name is invalid: the message names the file, field and valid choices."""


class PlanError(AutopruneError):
    """A pruning plan cannot be applied to the model (unknown group, bad ratio, unsupported structure)."""


class BackendUnavailable(AutopruneError):
    """A latency backend's runtime is missing or unreachable; the message says how to install or reach it."""


class StorageError(AutopruneError):
    """A folder, file or database cannot be written or read (read-only, full, corrupt, not a folder):
    a fault of the machine, not of the command; the message names the path and what to do."""
