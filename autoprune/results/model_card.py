"""The model card of an export: the evidence behind a shipped model, as JSON and Markdown.

Every number says where it came from: accuracy, MACs and params are the trial's record (and
the accuracy is re-evaluated at export), latency is re-measured at export on the run's
hardware profile interleaved with the dense model (the search-time figures are kept beside
it), versions and machine fingerprints are given for both the search and the export.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.environment import library_versions, machine_fingerprint
from autoprune.files import disk_size
from autoprune.latency import LatencyStats
from autoprune.records import TrialRecord
from autoprune.results.report import removed_share
from autoprune.results.run import RunData

if TYPE_CHECKING:
    from torch import nn

    from autoprune.task import Task


def layer_sparsity(dense: nn.Module, pruned: nn.Module) -> list[dict[str, Any]]:
    """Per module with its own parameters: parameter count dense vs pruned and the share removed."""
    def counts(model: nn.Module) -> dict[str, int]:
        return {name: sum(p.numel() for p in module.parameters(recurse=False))
                for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))}

    before, after, modules = counts(dense), counts(pruned), dict(dense.named_modules())
    return [{"layer": name, "type": type(modules[name]).__name__, "params_dense": n,
             "params_pruned": after.get(name, 0), "sparsity": 1.0 - after.get(name, 0) / n}
            for name, n in before.items()]


def group_sparsity(record: TrialRecord) -> list[dict[str, Any]]:
    """Per prunable group: planned ratio, channels before/after (after rounding) and the share removed."""
    return [{"group": name, "planned_ratio": spec["ratio"], "structure": spec["structure"],
             "channels_before": record.channels[name][0], "channels_after": record.channels[name][1],
             "removed": removed_share(record, name)}
            for name, spec in record.plan.items() if name in record.channels]


def build_card(
    *,
    data: RunData,
    record: TrialRecord,
    task: Task,
    fmt: str,
    files: list[Path],
    on_front: bool,
    dense_model: nn.Module,
    model: nn.Module,
    accuracy_at_export: float,
    latency: dict[str, LatencyStats],
    verification: dict[str, Any],
    rebuild: dict[str, Any],
    extra_metrics: dict[str, dict[str, dict[str, float]]] | None = None,
    quantization: dict[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The card as plain data (``model_card.json``); :func:`card_markdown` renders it.

    ``note``: how the exported files differ from the model the search timed (``Exporter.note``), kept as
    ``model.note`` and shown under the card's title.

    ``quantization``: how a quantized trial's shipped file was made (its record's ``quantization``);
    the card's ``precision`` section states it (fp32 otherwise).
    """
    dense = data.dense
    sizes = {f.name: f.stat().st_size for f in files}
    compressed = sum(disk_size(f.read_bytes())[1] for f in files)
    precision = {"precision": record.precision, "size_bytes": sum(sizes.values()), "compressed_bytes": compressed}
    if quantization:
        precision.update({k: quantization.get(k) for k in ("format", "calibration", "calibration_samples",
                                                           "calibration_data", "fp32_onnx_bytes", "fp32_accuracy",
                                                           "speedup_vs_fp32", "note", "keep_fp32")
                          if k in quantization})
    p50_dense, p50 = latency["dense"].median_ms, latency["pruned"].median_ms
    return {
        "model": {"run": str(data.run.path.resolve()), "trial": record.number, "format": fmt, "files": sizes,
                  "size_bytes": sum(sizes.values()), "compressed_bytes": compressed, "on_pareto_front": on_front,
                  "task": data.config.task, **({"note": note} if note else {})},
        "accuracy": {"metric": task.metric_name, "dense": dense.accuracy, "pruned": record.accuracy,
                     "delta": record.accuracy - dense.accuracy, "pruned_at_export": accuracy_at_export,
                     "test": {"dense": dense.test_accuracy, "pruned": record.test_accuracy},
                     "extra": extra_metrics or {}},
        "latency": {
            "at_export": {"profile": data.config.profile.name, "dense_p50_ms": p50_dense,
                          "dense_p90_ms": latency["dense"].p90_ms, "pruned_p50_ms": p50,
                          "pruned_p90_ms": latency["pruned"].p90_ms, "speedup": p50_dense / p50,
                          "dense": latency["dense"].to_dict(), "pruned": latency["pruned"].to_dict()},
            "at_search": {"pruned_p50_ms": record.latency_ms, "pruned_p90_ms": record.latency_p90_ms,
                          "dense_p50_ms": record.dense_latency.median_ms if record.dense_latency else None,
                          "speedup": record.speedup},
        },
        "params": {"dense": dense.params, "pruned": record.params},
        #: the shipped file's size at search time (weights as torch.save writes them, or the quantized ONNX file),
        #: plain and gzip'd, against the dense weights' (None from a run folder older than these figures)
        "size": {"dense": {"bytes": dense.size_bytes, "compressed_bytes": dense.compressed_bytes},
                 "pruned": {"bytes": record.size_bytes, "compressed_bytes": record.compressed_bytes}},
        "macs": {"dense": dense.macs, "pruned": record.macs},
        "sparsity": {"params_removed": 1.0 - record.params / dense.params, "groups": group_sparsity(record),
                     "layers": layer_sparsity(dense_model, model)},
        "precision": precision,
        "plan": record.plan,
        "rebuild": rebuild,
        "seeds": {"search": data.config.seed, "fine_tune": data.config.seed + record.number},
        "data": {"task": data.config.task, "train_samples": len(task.train_set),
                 "validation_samples": len(task.val_set),
                 "test_samples": None if task.test_set is None else len(task.test_set),
                 "metric": task.metric_name, "fine_tune_recipe": asdict(task.recipe)},
        "verification": verification,
        "hardware_profile": data.config.profile.to_dict(),
        "search": {"agent": data.config.agent, "trials": len(data.records), "objectives": list(data.config.objectives)},
        "versions": {"search": data.environment.get("versions", {}), "export": library_versions()},
        "machine": {"search": data.environment.get("machine", {}), "export": machine_fingerprint()},
    }


def _test_row(acc: dict[str, Any]) -> str:
    """The held-out test score row, or a row saying the task has no test split."""
    dense, pruned = acc["test"]["dense"], acc["test"]["pruned"]
    if dense is None or pruned is None:
        return _row(f"{acc['metric']} (test)", "no test split", "no test split", "-")
    return _row(f"{acc['metric']} (test: held out, never used by the search)", f"{100 * dense:.2f}%",
                f"{100 * pruned:.2f}%", f"{100 * (pruned - dense):+.2f} pt")


def _precision_lines(card: dict[str, Any]) -> list[str]:
    """The card's precision section: the precision and size, and for a quantized model how it was made."""
    p = card.get("precision") or {"precision": "fp32", "size_bytes": card["model"]["size_bytes"]}
    gzipped = f" ({p['compressed_bytes']:,} gzip'd)" if p.get("compressed_bytes") is not None else ""
    lines = ["## Precision", "", f"- Precision: **{p['precision']}**; size on disk {p['size_bytes']:,} bytes{gzipped}."]
    if "calibration" in p:
        lines += [f"- Quantization: {p['format']} (ONNX Runtime static quantization).",
                  f"- Calibration: method {p['calibration']}, {p['calibration_samples']} samples of the "
                  f"{p['calibration_data']}."]
    elif "format" in p:  # fp16: converted, not calibrated
        lines.append(f"- Conversion: {p['format']}.")
    if "fp32_onnx_bytes" in p:
        lines.append(f"- fp32 ONNX of the same candidate: {p['fp32_onnx_bytes']:,} bytes; its validation score in "
                     f"PyTorch {100 * p['fp32_accuracy']:.2f}%; the {p['precision']} file is "
                     f"{p['speedup_vs_fp32']:.2f}x faster than it (measured interleaved in the search).")
    if p.get("keep_fp32"):
        lines.append(f"- Kept in fp32: the layers matching {', '.join(f'`{g}`' for g in p['keep_fp32'])}.")
    if p.get("note"):
        lines.append(f"- Note: {p['note']}.")
    return [*lines, ""]


def _verification_line(ver: dict[str, Any]) -> str:
    verdict = "passed" if ver["passed"] else "FAILED"
    if "recorded_accuracy" in ver:  # a quantized file: checked against the score the search recorded
        return (f"The exported file was reloaded in ONNX Runtime and scored on all {ver['samples']} validation "
                f"inputs: {100 * ver['accuracy']:.2f}% against {100 * ver['recorded_accuracy']:.2f}% recorded in the "
                f"search (tolerance {100 * ver['tolerance']:.2f} pt); top-1 agreement with the fp32 PyTorch model "
                f"{100 * ver['top1_agreement']:.1f}%: **{verdict}**.")
    batches = " and ".join(str(b) for b in ver.get("batch_sizes") or [])
    return (f"The exported files were reloaded and run on {ver['samples']} validation inputs"
            + (f" (at batch {batches})" if batches else "") + ": max |difference| to the "
            f"pruned PyTorch model {ver['max_abs_diff']:.3g} (tolerance rtol {ver['rtol']}, atol {ver['atol']}), top-1 "
            f"agreement {100 * ver['top1_agreement']:.1f}%: **{verdict}**.")


def _extra_rows(extra: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One row per (task's extra metric, split), computed at export."""
    return [_row(f"{name} ({split}, at export)", f"{scores['dense']:.4f}", f"{scores['pruned']:.4f}",
                 f"{scores['pruned'] - scores['dense']:+.4f}")
            for name, splits in extra.items() for split, scores in splits.items()]


def _size_rows(size: dict[str, Any] | None) -> list[str]:
    """The size-on-disk rows (plain, gzip'd) of the search's figures; none for a run folder without them."""
    if not size or None in (size["dense"]["bytes"], size["pruned"]["bytes"]):
        return []
    dense, pruned = size["dense"], size["pruned"]
    return [_row(f"size on disk ({label})", f"{dense[key]:,} B", f"{pruned[key]:,} B",
                 f"{dense[key] / pruned[key]:.2f}x smaller")
            for label, key in (("weights or model file", "bytes"), ("gzip'd", "compressed_bytes"))]


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def card_markdown(card: dict[str, Any]) -> str:
    """A human-readable ``model_card.md`` with the same numbers as the JSON card."""
    m, acc, lat, ver = card["model"], card["accuracy"], card["latency"], card["verification"]
    now, then = lat["at_export"], lat["at_search"]
    lines = [
        f"# Model card: trial {m['trial']} of `{m['run']}`",
        "",
        f"Pruned `{m['task']}` exported as **{m['format']}** ({m['size_bytes']:,} bytes on disk: "
        + ", ".join(f"`{k}` {v:,}" for k, v in m["files"].items()) + ")."
        + ("" if m["on_pareto_front"] else " **Not on the Pareto front** (exported with --force)."),
        *(["", f"Note: {m['note']}."] if m.get("note") else []),
        "",
        "## Numbers",
        "",
        _row("", "dense", "pruned", "change"),
        _row("---", "---:", "---:", "---:"),
        _row(f"{acc['metric']} (validation: the search selected on it)", f"{100 * acc['dense']:.2f}%",
             f"{100 * acc['pruned']:.2f}%", f"{100 * acc['delta']:+.2f} pt"),
        _test_row(acc),
        *_extra_rows(acc.get("extra", {})),
        _row(f"latency p50, re-measured at export ({now['profile']})", f"{now['dense_p50_ms']:.4f} ms",
             f"{now['pruned_p50_ms']:.4f} ms", f"{now['speedup']:.2f}x faster"),
        _row("latency p90, re-measured at export", f"{now['dense_p90_ms']:.4f} ms",
             f"{now['pruned_p90_ms']:.4f} ms", ""),
        _row("latency p50 during the search", f"{then['dense_p50_ms']:.4f} ms", f"{then['pruned_p50_ms']:.4f} ms",
             f"{then['speedup']:.2f}x faster"),
        _row("params", f"{card['params']['dense']:,}", f"{card['params']['pruned']:,}",
             f"{100 * card['sparsity']['params_removed']:.1f}% removed"),
        _row("MACs", f"{card['macs']['dense']:,}", f"{card['macs']['pruned']:,}",
             f"{card['macs']['dense'] / card['macs']['pruned']:.2f}x fewer" if card["macs"]["pruned"]
             else "all removed"),
        *_size_rows(card.get("size")),
        "",
        f"Accuracy re-evaluated on the rebuilt model at export: {100 * acc['pruned_at_export']:.2f}%. "
        "Latency at export "
        "was measured interleaved with the dense model in one process (median of "
        f"{now['pruned']['runs']} runs, CV {100 * now['pruned']['cv']:.1f}%).",
        "",
        *_precision_lines(card),
        "## Verification",
        "",
        _verification_line(ver),
        "",
        "## Sparsity per prunable group",
        "",
        _row("group", "structure", "planned ratio", "channels kept / before", "removed"),
        _row("---", "---", "---:", "---:", "---:"),
        *[_row(f"`{g['group']}`", g["structure"], f"{g['planned_ratio']:.2f}",
               f"{g['channels_after']} / {g['channels_before']}", f"{100 * g['removed']:.1f}%")
          for g in card["sparsity"]["groups"]],
        "",
        "## Sparsity per layer (parameters)",
        "",
        _row("layer", "type", "dense", "pruned", "removed"),
        _row("---", "---", "---:", "---:", "---:"),
        *[_row(f"`{layer['layer']}`", layer["type"], f"{layer['params_dense']:,}", f"{layer['params_pruned']:,}",
               f"{100 * layer['sparsity']:.1f}%") for layer in card["sparsity"]["layers"]],
        "",
        "## Provenance",
        "",
        f"- Seeds: search {card['seeds']['search']}, this trial's fine-tune {card['seeds']['fine_tune']}.",
        f"- Data: task `{card['data']['task']}`, {card['data']['train_samples']} training and "
        f"{card['data']['validation_samples']} validation samples, metric {card['data']['metric']}.",
        f"- Search: agent {card['search']['agent']}, {card['search']['trials']} finished trials, objectives "
        f"{', '.join(card['search']['objectives'])}.",
        f"- Hardware profile: {card['hardware_profile']['name']} ({card['hardware_profile']['backend']}, "
        f"{card['hardware_profile']['device']}, {card['hardware_profile']['threads']} thread(s), batch "
        f"{card['hardware_profile']['batch_size']}).",
        "- Library versions at export: " + ", ".join(f"{k} {v}" for k, v in card["versions"]["export"].items()) + ".",
        "- Library versions in the search: "
        + ", ".join(f"{k} {v}" for k, v in card["versions"]["search"].items()) + ".",
        f"- Machine at export: {card['machine']['export'].get('cpu')} ({card['machine']['export'].get('cores')} cores, "
        f"id {card['machine']['export'].get('id')}); in the search: {card['machine']['search'].get('cpu')} "
        f"(id {card['machine']['search'].get('id')}).",
        "",
        "## The plan",
        "",
        "```json",
        json.dumps(card["plan"], indent=2, sort_keys=True),
        "```",
        "",
        "Rebuild (PyTorch): the task's dense model, this plan applied with the pruner settings "
        + ", ".join(f"{k}={v}" for k, v in card["rebuild"]["settings"].items())
        + ", then the state_dict loaded (`autoprune.results.export.load_torch_export` does this for a torch export).",
        "",
    ]
    return "\n".join(lines)
