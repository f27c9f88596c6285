"""Which PyTorch module each node of an exported ONNX graph came from, so layers can be named in the graph.

The TorchScript exporter (``export_onnx_bytes``) names a node by the module scopes it ran in and its
op: ``/model/block2/shortcut/shortcut.0/Conv`` is the Conv of module ``block2.shortcut.0`` (``model``
is the ``PositionalModule`` wrapper). A scope is written relative to the scope above it, except that
a numbered child keeps its parent's name (``shortcut.0``, ``mlp.2.0``, a ModuleList item directly under
the root as ``layers.0``). Rather than re-implement that rule, each scope is resolved against the
model's real module names: the longest dotted suffix of the scope that, appended to the module found
so far, names a module. A node whose scopes do not resolve maps to the deepest module resolved, so
the mapping errs towards the enclosing layer and never invents a name.

Callers check that every layer they name maps to at least one node (``nodes_in``), so a change of the
exporter's naming shows up as a one-line error, never as a layer silently left out.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

#: the wrapper's attribute that holds the user's model (``inputs.PositionalModule.model``)
WRAPPER = "model"


def node_module(node_name: str, modules: set[str]) -> str | None:
    """The module name a node of the exported graph belongs to ('' for the model itself), None for a node the
    exporter named without scopes (constants, graph-level Identity)."""
    if not node_name.startswith("/"):
        return None
    scopes = node_name.strip("/").split("/")[:-1]  # the last part is the op (Conv, Relu_1)
    if scopes and scopes[0] == WRAPPER:
        scopes = scopes[1:]
    path = ""
    for scope in scopes:
        parts = scope.split(".")
        found = None
        for k in range(len(parts)):
            candidate = ".".join(p for p in (path, ".".join(parts[k:])) if p)
            if candidate in modules:
                found = candidate
                break
        if found is None:
            break
        path = found
    return path


def node_modules(node_names: Iterable[str], modules: Iterable[str]) -> dict[str, str]:
    """Node name -> module name for every scoped node (``node_module``)."""
    known = set(modules)
    return {n: m for n in node_names if (m := node_module(n, known)) is not None}


def nodes_in(mapping: Mapping[str, str], layers: Iterable[str]) -> dict[str, list[str]]:
    """For each layer (module name), the nodes that ran inside it or its children."""
    return {layer: sorted(n for n, m in mapping.items() if m == layer or m.startswith(layer + "."))
            for layer in layers}
