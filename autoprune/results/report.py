"""The run report: ``RUN/report.html`` (one self-contained file) and PNG plots in ``RUN/plots/``.

The HTML embeds its plots as base64 PNG and its CSS inline and names no external URL, so it
opens offline, attached to a mail or archived with a model card. Plots use matplotlib's Agg
backend (no display needed).
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

from autoprune.files import atomic_write_bytes, atomic_write_text, size_text
from autoprune.records import TrialRecord, TrialState
from autoprune.results.run import RunData

#: the front's colour in every plot (the report test looks for it in a browser screenshot)
FRONT_COLOUR = "#d62728"
PLOTS = ("pareto", "hypervolume", "ratios")
#: the Pareto plot's marker of each precision (a joint prune-and-quantize search mixes them)
PRECISION_MARKERS = {"fp32": "o", "int8": "s", "fp16": "^"}


@dataclass(frozen=True, kw_only=True)
class Report:
    html: Path
    plots: dict[str, Path]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(data: RunData):
    """Accuracy vs p50 latency: the front, other complete trials, the dense model; rejected
    trials (screened out before fine-tuning, so without accuracy) in a strip below, those rejected
    on a predicted latency at that prediction; failed ones counted. Each trial's marker is its
    precision (``PRECISION_MARKERS``); the legend names those the run has."""
    plt = _pyplot()
    fig, (ax, strip) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.6), gridspec_kw={"height_ratios": [5, 1]})
    front_numbers = {r.number for r in data.front}
    others = [r for r in data.records if r.state == TrialState.COMPLETE and r.number not in front_numbers]
    precisions = sorted({r.precision for r in data.records if r.state == TrialState.COMPLETE})
    mixed = len(precisions) > 1
    for precision in precisions:
        mine = [r for r in others if r.precision == precision]
        if mine:
            ax.scatter([r.latency_ms for r in mine], [100 * r.accuracy for r in mine], s=28, color="#8c8c8c",
                       alpha=0.7, marker=PRECISION_MARKERS.get(precision, "o"),
                       label=f"complete, dominated{f' ({precision})' if mixed else ''}")
    if data.front:
        ax.plot([r.latency_ms for r in data.front], [100 * r.accuracy for r in data.front], "-", color=FRONT_COLOUR,
                lw=2, label="Pareto front")
        for precision in precisions:
            mine = [r for r in data.front if r.precision == precision]
            if mine:
                ax.scatter([r.latency_ms for r in mine], [100 * r.accuracy for r in mine], s=50, color=FRONT_COLOUR,
                           marker=PRECISION_MARKERS.get(precision, "o"), zorder=4,
                           label=f"front, {precision}" if mixed else None)
        for r in data.front:
            ax.annotate(f"#{r.number}" + (" noisy" if r.noisy else ""), (r.latency_ms, 100 * r.accuracy),
                        textcoords="offset points", xytext=(5, 5), fontsize=8, color=FRONT_COLOUR)
        noisy = [r for r in data.front if r.noisy]
        if noisy:  # open circles with error bars of one CV: the figure could be anywhere in there
            ax.errorbar([r.latency_ms for r in noisy], [100 * r.accuracy for r in noisy],
                        xerr=[r.latency_ms * r.latency.cv for r in noisy], fmt="o", mfc="white", color=FRONT_COLOUR,
                        ms=9, capsize=3, zorder=4, label="front point, noisy latency")
    dense_lat = data.dense.latency.median_ms
    ax.scatter([dense_lat], [100 * data.dense.accuracy], marker="*", s=220, color="black", zorder=5, label="dense")
    ax.axvline(dense_lat, color="black", lw=0.6, ls=":")
    ax.set_ylabel("validation accuracy %")
    ax.set_title(f"{data.config.task} on {data.config.profile.name}: accuracy vs measured latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    rejected = [r for r in data.records if r.state == TrialState.REJECTED and r.latency is not None]
    failed = [r for r in data.records if r.state == TrialState.FAILED]
    strip.scatter([r.latency_ms for r in rejected], [0] * len(rejected), marker="x", color="#ff7f0e", s=36)
    predicted = _plot_predicted(strip, data.records)
    strip.set_yticks([])
    strip.set_ylim(-1, 1)
    strip.set_xlabel(f"p50 latency ms ({data.config.profile.backend}, {data.config.profile.device}, "
                     f"{data.config.profile.threads} thread(s), batch {data.config.profile.batch_size})")
    strip.text(0.01, 0.55, f"rejected before fine-tuning: {len(rejected)} measured (x), {predicted}; "
               f"failed: {len(failed)} (see the table)", transform=strip.transAxes, fontsize=8, va="bottom")
    strip.axvline(dense_lat, color="black", lw=0.6, ls=":")
    fig.tight_layout()
    return fig


def _plot_predicted(strip, records: list[TrialRecord]) -> str:
    """Mark trials rejected on a predicted latency at that prediction (+), within the measured trials' axis
    range so a far-off prediction cannot squash the front; returns the strip's note on them."""
    predicted = [r.predicted_ms for r in records if r.screened_unmeasured]
    low, high = strip.get_xlim()
    shown = [ms for ms in predicted if ms <= high]
    strip.scatter(shown, [0] * len(shown), marker="+", color="#9467bd", s=44)
    strip.set_xlim(low, high)
    beyond = f", {len(predicted) - len(shown)} off the axis" if len(shown) < len(predicted) else ""
    return f"{len(predicted)} on prediction (+{beyond})"


def plot_hypervolume(data: RunData):
    """The run's hypervolume after each trial (as in ``pareto.json``; higher is a better front)."""
    plt = _pyplot()
    scoring = data.scoring
    ordered = sorted(data.records, key=lambda r: r.number)
    history = scoring.hypervolume_history(ordered)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.step([r.number for r in ordered], history, where="post", color=FRONT_COLOUR, lw=2)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume (normalised)")
    reference = ", ".join(f"{o} {v:g}" for o, v in scoring.reference.items())
    ax.set_title(f"hypervolume over trials (reference: {reference}; costs as a fraction of dense)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def removed_share(record: TrialRecord, group: str) -> float | None:
    """Share of a group's channels the pruner actually removed (after rounding), or None."""
    if group not in record.channels:
        return None
    before, after = record.channels[group]
    return 1.0 - after / before if before else 0.0


def plot_ratios(data: RunData):
    """Heatmap: removed share of channels per group (columns) for each Pareto plan (rows)."""
    import numpy as np

    plt = _pyplot()
    groups = [g["name"] for g in data.dense.groups]
    rows = data.front
    values = np.array([[removed_share(r, g) if removed_share(r, g) is not None else np.nan for g in groups]
                       for r in rows]) if rows else np.zeros((0, len(groups)))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 3), max(2.4, 0.45 * len(rows) + 1.6)))
    if rows:
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="Reds", aspect="auto")
        fig.colorbar(image, ax=ax, label="channels removed")
        for i, r in enumerate(rows):
            for j, g in enumerate(groups):
                if g in r.channels:
                    before, after = r.channels[g]
                    ax.text(j, i, f"{after}/{before}", ha="center", va="center", fontsize=7,
                            color="white" if values[i, j] > 0.6 else "black")
    else:
        ax.text(0.5, 0.5, "no complete trial yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(len(groups)), groups, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"#{r.number} ({r.latency_ms:.3g} ms)" for r in rows], fontsize=8)
    ax.set_title("Pareto plans: channels kept / before, per prunable group")
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; } td.l, th.l { text-align: left; }
tr.front td { color: #b01e1e; font-weight: 600; } tr.dense td { color: #555; font-style: italic; }
p.noisy, b.noisy { color: #8a5a00; } p.noisy { background: #fff4d6; padding: 6px 10px; border-left: 4px solid #e0a800; }
img { max-width: 100%; border: 1px solid #eee; } .meta { color: #555; font-size: 0.9em; }
"""


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _front_table(data: RunData) -> str:
    quantized = any(r.precision != "fp32" for r in data.front)  # a precision column only then
    head = ("trial", *(("precision",) if quantized else ()), "accuracy %", "Δ acc pt", "test %", "p50 ms", "p90 ms",
            "CV %", "speed-up", "MACs", "params", "size", "gzip'd", "mean removed")
    lat = data.dense.latency
    cell = "<td>fp32</td>" if quantized else ""
    rows = [f'<tr class="dense"><td>dense</td>{cell}<td>{100 * data.dense.accuracy:.2f}</td><td>+0.00</td>'
            f'<td>{_fmt(data.dense.test_accuracy, ".2f", 100)}</td>'
            f'<td>{lat.median_ms:.4f}</td><td>{lat.p90_ms:.4f}</td><td>{100 * lat.cv:.1f}</td><td>1.00x</td>'
            f'<td>{data.dense.macs:,}</td><td>{data.dense.params:,}</td><td>{size_text(data.dense.size_bytes)}</td>'
            f'<td>{size_text(data.dense.compressed_bytes)}</td><td>0.00</td></tr>']
    for r in data.front:
        shares = [s for s in (removed_share(r, g) for g in r.channels) if s is not None]
        cv = f'{100 * r.latency.cv:.1f}' + (' <b class="noisy">noisy</b>' if r.noisy else "")
        rows.append(
            f'<tr class="front{" noisy" if r.noisy else ""}"><td>{r.number}</td>'
            f'{f"<td>{r.precision}</td>" if quantized else ""}<td>{100 * r.accuracy:.2f}</td>'
            f'<td>{100 * (r.accuracy - data.dense.accuracy):+.2f}</td><td>{_fmt(r.test_accuracy, ".2f", 100)}</td>'
            f'<td>{r.latency_ms:.4f}</td>'
            f'<td>{r.latency_p90_ms:.4f}</td><td>{cv}</td>'
            f'<td>{data.dense.speedup_of(r.latency_ms):.2f}x</td>'
            f'<td>{r.macs:,}</td><td>{r.params:,}</td><td>{size_text(r.size_bytes)}</td>'
            f'<td>{size_text(r.compressed_bytes)}</td><td>{sum(shares) / max(len(shares), 1):.2f}</td></tr>')
    return _table(head, rows)


def noisy_note(data: RunData) -> str:
    """The warning above the front table when front points have noisy latency ('' when none has)."""
    noisy = [r for r in data.front if r.noisy]
    if not noisy:
        return ""
    items = "; ".join(f"#{r.number}: {html.escape(r.noise_note)}" for r in noisy)
    return (f'<p class="noisy">Not trustworthy: {len(noisy)} front point(s) kept a noisy latency (CV above the '
            f"profile's max_cv {100 * data.config.profile.max_cv:.1f}% after every re-measure; the machine was busy). "
            f"Their place on the front may be noise: re-run the search on a quiet machine. {items}</p>")


def _trials_table(data: RunData) -> str:
    head = ("trial", "state", "accuracy %", "p50 ms", "predicted ms", "speed-up", "MACs", "reason")
    front = {r.number for r in data.front}
    rows = []
    for r in data.records:
        css = ' class="front"' if r.number in front else ""
        rows.append(f'<tr{css}><td>{r.number}</td><td class="l">{r.state}{" (front)" if css else ""}</td>'
                    f'<td>{_fmt(r.accuracy, ".2f", 100)}</td><td>{_fmt(r.latency_ms, ".4f")}</td>'
                    f'<td>{_fmt(r.predicted_ms, ".4f")}</td><td>{_fmt(r.speedup, ".2f")}</td>'
                    f'<td>{_fmt(r.macs, ",")}</td>'
                    f'<td class="l">{html.escape(r.reason or r.quantization.get("note", ""))}</td></tr>')
    return _table(head, rows)


def _table(head: tuple[str, ...], rows: list[str]) -> str:
    cells = "".join(f'<th{" class=l" if h in ("state", "reason") else ""}>{html.escape(h)}</th>' for h in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(data: RunData, images: dict[str, bytes]) -> str:
    """The report page with ``images`` (name -> PNG bytes) embedded."""
    def img(name: str, alt: str) -> str:
        encoded = base64.b64encode(images[name]).decode()
        return f'<img id="{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'

    counts = {s: sum(r.state == s for r in data.records) for s in TrialState}
    cfg = data.config
    machine = data.environment.get("machine", {})
    meta = (f"task <b>{html.escape(cfg.task)}</b> · profile <b>{html.escape(cfg.profile.name)}</b> "
            f"({html.escape(cfg.profile.backend)}, {html.escape(cfg.profile.device)}) "
            f"· agent <b>{html.escape(cfg.agent)}</b> "
            f"· seed {cfg.seed} · {len(data.records)} finished trials ({counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.REJECTED]} rejected, {counts[TrialState.FAILED]} failed) · machine "
            f"{html.escape(str(machine.get('cpu', '?')))} ({html.escape(str(machine.get('id', '?')))})")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autoprune report: {html.escape(str(data.run.path))}</title>
<style>{CSS}</style></head><body>
<h1>autoprune report: {html.escape(str(data.run.path))}</h1>
<p class="meta">{meta}</p>
<h2>Pareto front: accuracy vs measured latency</h2>
{img("pareto", "Pareto plot")}
<h2>Pareto front table</h2>
<p class="meta">Latency is the profile's p50 (p90, CV) measured interleaved with the dense model; speed-up is that
ratio. Pick one with <code>autoprune pick</code>, ship it with <code>autoprune export --trial N</code>.</p>
{noisy_note(data)}
{_front_table(data)}
<h2>Hypervolume over trials</h2>
{img("hypervolume", "hypervolume over trials")}
<h2>Per-layer pruning of the Pareto plans</h2>
{img("ratios", "per-group removed channels heatmap")}
<h2>All trials</h2>
{_trials_table(data)}
</body></html>
"""


def write_report(data: RunData) -> Report:
    """Write ``plots/{pareto,hypervolume,ratios}.png`` and ``report.html`` into the run folder."""
    images = {"pareto": _png(plot_pareto(data)), "hypervolume": _png(plot_hypervolume(data)),
              "ratios": _png(plot_ratios(data))}
    plots = {name: atomic_write_bytes(data.run.path / "plots" / f"{name}.png", blob) for name, blob in images.items()}
    page = atomic_write_text(data.run.path / "report.html", render_html(data, images))
    return Report(html=page, plots=plots)
