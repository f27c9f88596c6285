"""How the driver scales: trials/hour with 1 and 2 Ray workers, driver overhead, utilisation.

1. Trials per hour on the digits task with 1 and 2 workers (one thread and one Ray CPU each,
   CPU-bound 1-epoch fine-tunes; every candidate is fine-tuned) on a local Ray (target: 2 workers
   >= 1.7x one).
2. The driver's own cost per trial (agent ask/tell, study writes, Pareto file) with a formula
   executor that returns at once (target: <= 50 ms), per study storage: the run folder's SQLite
   ``study.db``, and with ``--storage`` a database server (``postgres``: a private PostgreSQL this
   benchmark starts with ``initdb``/``pg_ctl`` on a loopback port, as the tests do; or any SQLAlchemy URL).
3. Utilisation of 64 simulated workers whose evaluations sleep (random 0.5-1.5x the mean):
   busy worker-seconds / (64 x wall time) while trials remain to be started (target:
   >= 95%); the whole run's figure, with ramp-up and the budget's tail, is printed too.

The formula and sleeping executors are this benchmark's instruments: they stand in for workers
so the driver alone is timed; their records carry synthetic objective values derived from
the plan. Run: ``python bench/scale.py [--trials N] [--sleep S] [--skip-ray] [--storage postgres|URL ...]``.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoprune.config import ExecutionConfig, SearchConfig, load_profile, load_space  # noqa: E402
from autoprune.execution.jobs import Done, FinetuneJob, Job  # noqa: E402
from autoprune.plan import PruningPlan  # noqa: E402
from autoprune.records import TrialRecord, TrialState  # noqa: E402
from autoprune.results.search import run_search  # noqa: E402
from autoprune.testing.fakes import stats  # noqa: E402
from autoprune.testing.toy import FormulaExecutor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(number: int, plan: PruningPlan) -> TrialRecord:
    """A record whose objectives follow the plan: more pruning, faster and less accurate."""
    ratio = plan.mean_ratio()
    latency = stats(1.0 - 0.7 * ratio, p90_ms=1.05 - 0.7 * ratio)
    return TrialRecord(number=number, plan=plan.to_dict(), state=TrialState.COMPLETE,
                       accuracy=0.99 - 0.3 * ratio * ratio,
                       latency=latency, speedup=1.0 / latency.median_ms)


class SleepExecutor(FormulaExecutor):
    """``slots`` simulated workers; a trial's fine-tune occupies one for a random 0.5-1.5 x ``mean_s`` seconds."""

    def __init__(self, slots: int, mean_s: float, seed: int = 0) -> None:
        super().__init__(_synthetic)
        self.slots = slots
        self.mean_s = mean_s
        self.rng = random.Random(seed)
        self._due: list[tuple[float, int, Job]] = []
        self.intervals: list[tuple[float, float]] = []  # (start, end) of every simulated evaluation

    def submit(self, job: Job) -> None:
        now = time.perf_counter()
        duration = self.mean_s * self.rng.uniform(0.5, 1.5) if isinstance(job, FinetuneJob) else 0.0
        self.intervals += [(now, now + duration)] if duration else []
        heapq.heappush(self._due, (now + duration, id(job), job))

    def wait(self) -> list[Done]:
        time.sleep(max(0.0, self._due[0][0] - time.perf_counter()))
        done = []
        while self._due and self._due[0][0] <= time.perf_counter():
            job = heapq.heappop(self._due)[2]
            done.append(Done(job=job, result=self.result(job)))
        return done

    @property
    def in_flight(self) -> int:
        return len(self._due)

    def utilisation(self, steady: bool) -> float:
        """Busy worker-seconds / (slots x window). ``steady``: from the moment every worker was first
        busy to the last submission (the driver's job: keep workers fed while trials remain);
        otherwise the whole run, including the ramp-up and the budget's tail."""
        starts = sorted(s for s, _ in self.intervals)
        t0, t1 = (starts[self.slots - 1], starts[-1]) if steady else (starts[0], max(e for _, e in self.intervals))
        busy = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in self.intervals)
        return busy / (self.slots * (t1 - t0))


def _config(task: str, trials: int, agent: str, **overrides: Any) -> SearchConfig:
    return SearchConfig(task=task, profile=load_profile(ROOT / "hw_profiles/cpu-onnxruntime.yaml"),
                        space=load_space(ROOT / "search_spaces/default.yaml"), agent=agent, trials=trials, seed=0,
                        min_speedup=0.0, **overrides)


def _timed_search(config: SearchConfig, **kwargs: Any) -> float:
    """Seconds from the first trial's start to the last trial's end (set-up excluded)."""
    marks: dict[str, float] = {}

    def on_event(kind: str, payload: Any) -> None:
        if kind == "start":
            marks["start"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        run_search(config, Path(out) / "run", on_event=on_event, **kwargs)
        return time.perf_counter() - marks["start"]


def bench_workers(trials: int) -> list[dict[str, Any]]:
    from autoprune.execution.ray_executor import RayExecutor, start_local_ray

    start_local_ray(num_cpus=2, measure_profiles=["cpu-onnxruntime"])
    rows = []
    from autoprune.task import resolve_task

    config = _config("digits", trials, "random", finetune={"epochs": 1, "threads": 1})
    task = resolve_task("digits")
    for workers in (1, 2):
        executor = RayExecutor(ExecutionConfig(workers=workers), config, task.build_model(), task.example_input)
        seconds = _timed_search(config, executor=executor)
        rows.append({"figure": "trials_per_hour", "workers": workers, "trials": trials, "seconds": round(seconds, 2),
                     "trials_per_hour": round(3600 * trials / seconds, 1)})
    rows.append({"figure": "speedup_2_vs_1", "value": round(rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"], 2),
                 "target": ">= 1.7"})
    return rows


def bench_overhead(trials: int, storages: dict[str, str | None]) -> list[dict[str, Any]]:
    """Per storage (name -> SQLAlchemy URL; None: the run folder's SQLite) and agent: driver ms per trial."""
    rows = []
    for name, url in storages.items():
        for agent in ("random", "tpe"):
            # a fresh study per measurement: a database outlives the temporary run folder
            seconds = _timed_search(_config("tests.tiny_task:tiny_task", trials, agent),
                                    executor=FormulaExecutor(_synthetic), storage=url,
                                    study=None if url is None else f"bench-{uuid.uuid4().hex[:12]}")
            rows.append({"figure": "driver_overhead_ms_per_trial", "storage": name, "agent": agent, "trials": trials,
                         "value": round(1000 * seconds / trials, 2), "target": "<= 50"})
    return rows


def _storages(requested: list[str], stack: ExitStack) -> dict[str, str | None]:
    """``sqlite`` always; ``postgres`` starts a private server (stopped by ``stack``); anything else is a URL."""
    storages: dict[str, str | None] = {"sqlite": None}
    for value in requested:
        if value == "postgres":
            from tests.postgres import find_postgres, postgres_server

            bin_dir = find_postgres()
            if bin_dir is None:
                raise SystemExit("--storage postgres: PostgreSQL is not installed (Debian: apt-get install postgresql)")
            storages["postgresql"] = stack.enter_context(postgres_server(bin_dir))
        elif value != "sqlite":
            storages[value.split(":", 1)[0]] = value
    return storages


def bench_utilisation(slots: int, waves: int, mean_s: float) -> list[dict[str, Any]]:
    executor = SleepExecutor(slots, mean_s)
    _timed_search(_config("tests.tiny_task:tiny_task", slots * waves, "random"), executor=executor)
    return [{"figure": f"utilisation_{kind}", "workers": slots, "trials": slots * waves, "mean_eval_s": mean_s,
             "value": round(executor.utilisation(kind == "steady"), 4), "target": ">= 0.95" if kind == "steady" else ""}
            for kind in ("steady", "whole_run")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per worker count (digits, 1-epoch fine-tunes)")
    parser.add_argument("--overhead-trials", type=int, default=100)
    parser.add_argument("--waves", type=int, default=4, help="trials per simulated worker")
    parser.add_argument("--sleep", type=float, default=10.0, help="mean simulated evaluation seconds")
    parser.add_argument("--skip-ray", action="store_true", help="skip the real 1-vs-2 worker figure")
    parser.add_argument("--skip-utilisation", action="store_true", help="skip the 64 simulated workers figure")
    parser.add_argument("--storage", action="append", default=[],
                        help="also time the driver overhead with this study storage: `postgres` (a private server "
                             "started here) or a SQLAlchemy URL; repeatable (SQLite is always timed)")
    args = parser.parse_args()
    os.environ.setdefault("AUTOPRUNE_CACHE_DIR", str(ROOT / "results/.cache"))  # Ray workers share the dense model
    with ExitStack() as stack:
        rows = bench_overhead(args.overhead_trials, _storages(args.storage, stack))
    if not args.skip_utilisation:
        rows += bench_utilisation(64, args.waves, args.sleep)
    if not args.skip_ray:
        rows += bench_workers(args.trials)
    for row in rows:
        print(json.dumps(row))
    print(f"\n{'figure':32} {'setting':44} {'value':>10}  target")
    for row in rows:
        setting = ", ".join(f"{k}={row[k]}" for k in ("storage", "agent", "workers", "trials", "mean_eval_s")
                            if k in row)
        value = row.get("value", row.get("trials_per_hour"))
        print(f"{row['figure']:32} {setting:44} {value:>10}  {row.get('target', '')}")
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end "
          "(shared with other jobs: absolute figures are noisy)")


if __name__ == "__main__":
    main()
