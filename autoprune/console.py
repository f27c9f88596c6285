"""Terminal output: the search progress bar and the tables the CLI prints (rich)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autoprune.files import size_text
from autoprune.latency import LatencyStats
from autoprune.plan import plan_groups
from autoprune.records import DenseReference, TrialRecord, TrialState

if TYPE_CHECKING:
    from autoprune.pruning.graph import Discovery
    from autoprune.search.sensitivity import SensitivityReport


#: columns of tables written to a file or a pipe (rich's default there is 80: a Pareto table of 11+ columns
#: then truncates every cell to "…" in logs and CI output)
LOG_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    """A rich console: the terminal's width on a terminal; ``LOG_WIDTH`` columns in a log or a pipe (unless
    ``COLUMNS`` says otherwise)."""
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=LOG_WIDTH)


def _best_tradeoff(records: list[TrialRecord], dense: DenseReference | None, tolerance: float = 0.01) -> str:
    """The fastest complete trial within ``tolerance`` of dense accuracy (``pick.fastest_within``), in short."""
    from autoprune.results.pick import fastest_within

    complete = [r for r in records if r.state == TrialState.COMPLETE]
    best = None if dense is None else fastest_within(complete, dense, tolerance)
    if best is None or dense is None or best.accuracy is None or best.latency_ms is None:
        return "no trial within 1 pt of dense yet"
    return (f"best within 1 pt: #{best.number} {100 * best.accuracy:.1f}% @ {best.latency_ms:.3f} ms "
            f"({dense.speedup_of(best.latency_ms):.2f}x)")


def screening_line(info: dict[str, Any]) -> str:
    """One line saying which latency predictor screens candidates (the driver's ``screening`` event)."""
    if not info["active"]:
        if info["path"] is None:
            return "latency screening: off (predictor: off); every candidate is measured"
        return (f"latency screening: off (no predictor calibrated at {info['path']}; `autoprune calibrate` "
                "builds one); every candidate is measured")
    error = info["holdout_mdape"]
    held_out = "held-out error unknown" if error is None else f"held-out median error {100 * error:.1f}%"
    return (f"latency screening: predictor {info['path']} ({held_out}); a candidate too slow even "
            f"{100 * info['margin']:.0f}% faster than predicted is rejected unmeasured, the rest are measured")


class SearchProgress:
    """A rich progress bar fed by the driver's events; shows the best trade-off so far."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.description}"), console=console)
        self.task_id = None
        self.records: list[TrialRecord] = []
        self.dense: DenseReference | None = None

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "dense":
            self.dense = payload
            self.console.print(f"dense model: accuracy {100 * payload.accuracy:.2f}%, latency "
                               f"{payload.latency.median_ms:.3f} ms (p90 {payload.latency.p90_ms:.3f}, "
                               f"CV {100 * payload.latency.cv:.1f}%), {payload.macs / 1e6:.1f} M MACs, "
                               f"{len(payload.groups)} prunable groups")
        elif kind == "screening":
            self.console.print(screening_line(payload), highlight=False)
        elif kind == "start":
            done, total = payload
            self.progress.start()
            self.task_id = self.progress.add_task("", total=total, completed=done)
            if done:
                self.console.print(f"resuming: {done} of {total} trials already finished")
        elif kind == "trial":
            self.records.append(payload)
            self.progress.update(self.task_id, advance=1,
                                 description=_best_tradeoff(self.records, self.dense))

    def close(self) -> None:
        self.progress.stop()


def pareto_table(dense: DenseReference, front: list[TrialRecord]) -> Table:
    """The Pareto front next to the dense reference; "test %" is the held-out split the search never saw."""
    noisy = [r for r in front if r.noisy]
    caption = (f"! {len(noisy)} front point(s) with a noisy latency (CV above the profile's max_cv after every "
               "re-measure): their place on the front is not trustworthy" if noisy else None)
    table = Table(title="Pareto front (validation accuracy vs measured latency; test = held out)", caption=caption)
    quantized = any(r.precision != "fp32" for r in front)  # the precision column only then
    for column in ("trial", *(("prec",) if quantized else ()), "acc %", "Δ pt", "test %", "p50 ms", "p90 ms",
                   "speedup", "MMACs", "Kparams", "size", "gzip'd", "ratio"):
        table.add_column(column, justify="right", no_wrap=True)
    if noisy:
        table.add_column("latency", no_wrap=True)
    lat = dense.latency
    table.add_row("dense", *(("fp32",) if quantized else ()), f"{100 * dense.accuracy:.2f}", "0.00",
                  percent(dense.test_accuracy),
                  f"{lat.median_ms:.3f}", f"{lat.p90_ms:.3f}", "1.00x", f"{dense.macs / 1e6:.1f}",
                  f"{dense.params / 1e3:.0f}", size_text(dense.size_bytes), size_text(dense.compressed_bytes), "0.00",
                  style="dim")
    for r in front:
        ratios = [g["ratio"] for g in plan_groups(r.plan).values()]
        table.add_row(str(r.number), *((r.precision,) if quantized else ()), f"{100 * r.accuracy:.2f}",
                      f"{100 * (r.accuracy - dense.accuracy):+.2f}", percent(r.test_accuracy), f"{r.latency_ms:.3f}",
                      f"{r.latency_p90_ms:.3f}", f"{dense.speedup_of(r.latency_ms):.2f}x",
                      f"{r.macs / 1e6:.1f}", f"{r.params / 1e3:.0f}", size_text(r.size_bytes),
                      size_text(r.compressed_bytes), f"{sum(ratios) / max(len(ratios), 1):.2f}",
                      *([r.noise_note or "ok"] if noisy else []), style="yellow" if r.noisy else None)
    return table


def percent(share: float | None) -> str:
    """``0.9712`` as ``97.12``; ``-`` when there is no value (a task without a test split)."""
    return "-" if share is None else f"{100 * share:.2f}"


def latency_table(title: str, stats: LatencyStats) -> Table:
    """One measurement's figures and where they were taken."""
    table = Table(title=title)
    for column in ("p50 ms", "p90 ms", "mean ms", "CV %", "runs", "backend", "threads", "batch"):
        table.add_column(column, justify="right")
    table.add_row(f"{stats.median_ms:.3f}", f"{stats.p90_ms:.3f}", f"{stats.mean_ms:.3f}", f"{100 * stats.cv:.1f}",
                  str(stats.runs), stats.backend, str(stats.threads), str(stats.batch_size))
    return table


def discovery_tables(report: Discovery) -> list[Table]:
    """The prunable groups and the layers left out of a discovery report."""
    groups = Table(title=f"{report.model}: {len(report.groups)} prunable groups "
                         f"({report.macs / 1e6:.1f} M MACs, {report.params / 1e3:.0f} K params)")
    groups.add_column("group", overflow="fold")
    for column in ("unit", "width", "ch. groups", "MACs %", "params %", "layers"):
        groups.add_column(column, justify="right")
    groups.add_column("couplings")
    for g in report.groups:
        width = f"{g.heads} heads" if g.unit == "head" else str(g.channels)
        groups.add_row(g.name, g.unit, width, str(g.channel_groups), f"{100 * g.macs_share:.1f}",
                       f"{100 * g.params_share:.1f}", str(len(g.layers)), ", ".join(g.couplings))
    left = Table(title=f"{len(report.left_out)} layers left out")
    left.add_column("layer", overflow="fold")
    left.add_column("type")
    left.add_column("reason")
    for item in report.left_out:
        left.add_row(item.layer, item.type, item.reason)
    blocks = Table(title=f"{len(report.blocks)} droppable blocks (structure `drop`: input and output shapes match; "
                         "a search space allows it per block type)")
    blocks.add_column("block", overflow="fold")
    for column in ("type", "MACs %", "params %", "layers"):
        blocks.add_column(column, justify="right")
    for b in report.blocks:
        blocks.add_row(b.name, b.root_type, f"{100 * b.macs_share:.1f}", f"{100 * b.params_share:.1f}",
                       str(len(b.layers)))
    return [groups, left, blocks]


def sensitivity_table(report: SensitivityReport) -> Table:
    """One row per (group, ratio): channels, accuracy drop, measured speed-up, MAC ratio."""
    table = Table(title=f"Sensitivity of {report.task} on {report.profile} (dense {100 * report.dense_accuracy:.2f}%, "
                        f"{report.dense_latency_ms:.3f} ms; BN recalibrated, no fine-tune)")
    for column in ("group", "ratio", "channels", "accuracy %", "Δ acc pt", "p50 ms", "speed-up", "MACs"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for r in report.rows:
        table.add_row(r.group, f"{r.ratio:.2f}", f"{r.channels[0]}->{r.channels[1]}", f"{100 * r.accuracy:.2f}",
                      f"{100 * (r.accuracy - report.dense_accuracy):+.2f}", f"{r.latency_ms:.3f}", f"{r.speedup:.2f}x",
                      f"{100 * r.macs_ratio:.0f}%")
    return table
