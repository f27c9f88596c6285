"""Sweeps: several searches run one after another by a deadline, and a morning report.

``run_sweep`` loads the sweep (every profile and space file is checked before anything runs),
joins or starts Ray once, and runs each search into ``OUT/<search name>/`` with the driver's
``deadline``: search *i* of *n* may use an equal share of the time left, so time a search
does not need (it reached its trial budget early) goes to the ones after it. Inside a search
the driver stops starting trials whose estimated duration (median of finished trials) would
overrun its share; a search is not started when the time left cannot fit its set-up (dense
training and measurement) and one trial, both estimated from the searches before it. The report
(``report.md``, ``report.html``, ``sweep.json``) shows each Pareto front and the recommended
model per hardware profile: the Pareto trial with the lowest measured p50 within
``accuracy_tolerance`` of its dense model (``pick.fastest_within``).
"""
from __future__ import annotations

import datetime as dt
import html
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.config import ExecutionConfig, SearchConfig, SweepConfig, load_sweep
from autoprune.errors import ConfigError
from autoprune.execution.driver import EventSink
from autoprune.execution.ray_executor import connect_ray, task_modules
from autoprune.execution.trials import TrialClock
from autoprune.files import atomic_write_json, atomic_write_text
from autoprune.records import DenseReference, TrialRecord, TrialState
from autoprune.results.pick import fastest_within
from autoprune.results.search import SearchOutcome, run_search


def parse_until(text: str, now: dt.datetime | None = None) -> float:
    """The next local time ``HH:MM`` (today, or tomorrow if it has passed) as a ``time.time()`` value."""
    try:
        hour, minute = (int(x) for x in text.split(":"))
        clock = dt.time(hour, minute)
    except ValueError:
        raise ConfigError(f"--until {text}: expected a local time HH:MM, e.g. 06:30") from None
    now = now or dt.datetime.now()
    end = now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    if end <= now:
        end += dt.timedelta(days=1)
    return end.timestamp()


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    sweep: SweepConfig
    out: Path
    outcomes: list[tuple[str, SearchConfig, SearchOutcome]]
    report: Path


def run_sweep(path: str | Path, out: str | Path, *, deadline: float | None = None,
              execution: ExecutionConfig | None = None, on_event: EventSink | None = None,
              storage: str | None = None) -> SweepOutcome:
    """Run every search of the sweep file ``path`` into ``out`` and write the report.

    Args:
        deadline: a ``time.time()`` value the sweep should end by (None: full trial budgets).
        execution: replaces the sweep file's execution settings (e.g. from command-line flags).
        on_event: ``("search", (name, index, count))`` before each search, then the driver's events.
        storage: a study database (SQLAlchemy URL) for every search, each its study ``SWEEP.SEARCH``;
            None: each run folder's own ``study.db``.

    Raises:
        ConfigError: the sweep file, a profile or space file it names, or an agent is invalid.
    """
    sweep, configs = load_sweep(path)
    execution = execution or sweep.execution
    notify = on_event or (lambda kind, payload: None)
    out = Path(out)
    owns_ray = False
    if execution.uses_ray:
        profiles = {c.profile.name: c.profile for c in configs}
        modules = {m.__name__: m for c in configs for m in task_modules(c.task)}
        owns_ray = connect_ray(execution, [profiles[n] for n in sorted(profiles)],
                               [modules[n] for n in sorted(modules)])
    outcomes = []
    try:
        for i, (entry, config) in enumerate(zip(sweep.searches, configs, strict=True)):
            prior = _prior_durations(outcomes, config)
            needed = _setup_and_trial_s(outcomes, config, prior)
            if deadline is not None and time.time() + needed >= deadline:
                notify("skipped", (entry.name, i, len(configs), needed))  # no time left to set it up and run a trial
                continue
            notify("search", (entry.name, i, len(configs)))
            share = None if deadline is None else time.time() + (deadline - time.time()) / (len(configs) - i)
            outcome = run_search(config, out / entry.name, execution=execution, deadline=share, on_event=on_event,
                                 prior_durations=prior, storage=storage,
                                 study=f"{sweep.name}.{entry.name}" if storage else None)
            outcomes.append((entry.name, config, outcome))
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    report = write_report(sweep, outcomes, out)
    return SweepOutcome(sweep=sweep, out=out, outcomes=outcomes, report=report)


def _prior_durations(outcomes: list[tuple[str, SearchConfig, SearchOutcome]], config: SearchConfig) -> list[float]:
    """Trial durations of the sweep's earlier searches that estimate this one's before it has its own: those of the
    same task and profile, else of the same task on any profile (the fine-tune dominates a trial), else none (then
    the search runs one trial at a time until its first one has finished)."""
    def durations(same) -> list[float]:
        return [sum(r.seconds.values()) for _, c, o in outcomes if same(c) for r in o.records
                if r.seconds and r.duplicate_of is None]

    return (durations(lambda c: (c.task, c.profile) == (config.task, config.profile))
            or durations(lambda c: c.task == config.task))


def _setup_and_trial_s(outcomes: list[tuple[str, SearchConfig, SearchOutcome]], config: SearchConfig,
                       prior: list[float]) -> float:
    """Seconds a search needs before its first trial ends, estimated from the sweep's earlier searches: the median
    set-up of those of the same task and profile (else of all of them) plus one trial as the search's own deadline
    clock will estimate it from ``prior`` (``TrialClock``); 0 with nothing to estimate from (the first search
    always starts)."""
    alike = [o.setup_s for _, c, o in outcomes if (c.task, c.profile) == (config.task, config.profile)]
    setups = alike or [o.setup_s for _, _, o in outcomes]
    trial = TrialClock.of(None, [], prior).estimate()
    return (statistics.median_high(setups) if setups else 0.0) + (trial or 0.0)


def recommend(outcomes: list[tuple[str, SearchConfig, SearchOutcome]], tolerance: float) -> dict[str, dict[str, Any]]:
    """Per profile: the Pareto trial with the lowest measured p50 within ``tolerance`` of its dense accuracy, across
    searches (``pick.fastest_within``, the rule ``pick`` and the report use); its speed-up is its search's dense p50
    over its p50, the numbers the front shows."""
    best: dict[str, dict[str, Any]] = {}
    for name, config, outcome in outcomes:
        r = fastest_within(outcome.front, outcome.dense, tolerance)
        if r is None or r.latency_ms is None or r.accuracy is None:
            continue
        current = best.get(config.profile.name)
        if current is None or r.latency_ms < current["latency_ms"]:
            best[config.profile.name] = {"search": name, "trial": r.number, "accuracy": r.accuracy,
                                         "dense_accuracy": outcome.dense.accuracy, "latency_ms": r.latency_ms,
                                         "dense_latency_ms": outcome.dense.latency.median_ms,
                                         "speedup": outcome.dense.speedup_of(r.latency_ms),
                                         "model_path": r.model_path, "noisy": r.noisy}
    return best


def _front_rows(front: list[TrialRecord], dense: DenseReference) -> list[list[str]]:
    return [[str(r.number), f"{100 * r.accuracy:.2f}", f"{100 * (r.accuracy - dense.accuracy):+.2f}",
             f"{r.latency_ms:.3f}" + (" (noisy)" if r.noisy else ""), f"{dense.speedup_of(r.latency_ms):.2f}x",
             f"{(r.macs or 0) / 1e6:.2f}", r.model_path or ""]
            for r in front]


FRONT_HEAD = ["trial", "accuracy %", "Δ acc pt", "p50 ms", "speed-up", "MACs M", "model"]
RECOMMEND_HEAD = ["profile", "search", "trial", "accuracy %", "dense %", "p50 ms", "speed-up", "model"]


def _sections(sweep: SweepConfig, outcomes, picks) -> list[tuple[str, list[str], list[str], list[list[str]]]]:
    """(title, lines of text, table header, table rows) for each part of the report."""
    ran = {name for name, _, _ in outcomes}
    skipped = [entry.name for entry in sweep.searches if entry.name not in ran]
    tol = f"{100 * sweep.accuracy_tolerance:g}"
    rec_rows = [[profile, p["search"], str(p["trial"]), f"{100 * p['accuracy']:.2f}",
                 f"{100 * p['dense_accuracy']:.2f}",
                 f"{p['latency_ms']:.3f}" + (" (noisy)" if p.get("noisy") else ""), f"{p['speedup']:.2f}x",
                 p["model_path"] or ""] for profile, p in picks.items()]
    missing = sorted({c.profile.name for _, c, _ in outcomes} - set(picks))
    notes = [f"Lowest measured p50 of the Pareto trials within {tol} pt of their dense model's accuracy, per "
             "hardware profile; speed-up = dense p50 / p50."]
    if skipped:
        notes.append("Not run (the time left before the deadline could not fit their set-up and one trial, "
                     f"estimated from the searches before them): {', '.join(skipped)}.")
    notes += [f"{profile}: no Pareto trial within {tol} pt of dense accuracy; ship the dense model."
              for profile in missing]
    sections = [("Recommended model per profile", notes, RECOMMEND_HEAD, rec_rows)]
    for name, config, outcome in outcomes:
        recs = outcome.records
        complete = sum(r.state == TrialState.COMPLETE for r in recs)
        rejected = sum(r.state == TrialState.REJECTED for r in recs)
        counts = (f"{len(recs)} of {config.trials} trials finished: {complete} complete, "
                  f"{rejected} rejected before fine-tuning, {len(recs) - complete - rejected} failed")
        dense = outcome.dense
        lines = [f"task `{config.task}`, profile `{config.profile.name}`, space `{config.space.name}`, "
                 f"agent `{config.agent}`, run folder `{outcome.run.path}`", counts,
                 f"dense: accuracy {100 * dense.accuracy:.2f}%, p50 {dense.latency.median_ms:.3f} ms"]
        sections.append((f"Search {name}: Pareto front", lines, FRONT_HEAD, _front_rows(outcome.front, dense)))
    return sections


def _markdown(title: str, sections) -> str:
    out = [f"# {title}", ""]
    for heading, lines, head, rows in sections:
        out += [f"## {heading}", ""] + [f"{line}  " for line in lines] + [""]
        if rows:
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out.append("")
    return "\n".join(out)


def _html(title: str, sections) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for heading, lines, head, rows in sections:
        body.append(f"<h2>{e(heading)}</h2>")
        body += [f"<p>{e(line)}</p>" for line in lines]
        if rows:
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</table>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def write_report(sweep: SweepConfig, outcomes: list[tuple[str, SearchConfig, SearchOutcome]], out: Path) -> Path:
    """Write ``report.md``, ``report.html`` and ``sweep.json`` into ``out``; return the Markdown path."""
    picks = recommend(outcomes, sweep.accuracy_tolerance)
    sections = _sections(sweep, outcomes, picks)
    title = f"Sweep {sweep.name}: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    atomic_write_json(out / "sweep.json", {
        "name": sweep.name, "recommended": picks,
        "searches": [{"name": n, "run": str(o.run.path), "profile": c.profile.name, "trials": len(o.records),
                      "setup_s": round(o.setup_s, 2), "front": [r.number for r in o.front]} for n, c, o in outcomes]})
    atomic_write_text(out / "report.html", _html(title, sections))
    return atomic_write_text(out / "report.md", _markdown(title, sections))
