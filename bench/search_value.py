"""Does the search pay? Every agent and baseline at equal full fine-tunes, judged on the held-out split.

For one task (any registered name or ``module:function``) and profile, over several seeds, each
agent (``tpe``, ``nsga2``, ``rl``, ``random``) and baseline (``uniform``, ``global``) runs an ordinary
search (``run_search``: the same runner, fine-tune recipe and interleaved latency measurement for
all) until it has spent ``--finetunes`` full fine-tunes (a rejected candidate or a duplicate costs
none; a run is resumed with more trials until the count is reached, or ``--max-trials-factor`` x
that many trials have run). Random search also runs to ``--random-factor`` x the fine-tunes; its
first ``--finetunes`` fine-tunes are the equal-budget random run (a seeded sampler's prefix is the
shorter run).

Everything is judged on the task's held-out ``test_set`` (the validation split, with a warning, when
the task has none). Selection stays on validation, as a user would select: the Pareto front is
taken on (validation score, latency), its members are re-scored on test; the best model at a
latency budget is the most accurate on validation among trials measured at <= budget x dense
(latency as the interleaved ratio to dense), reported with its test score. Per agent, mean and
standard deviation over seeds of:

* hypervolume of the test-scored front: (score, latency / dense), reference (``--reference``, 1.0),
  the same for every agent;
* best test score at each latency budget (``--budgets``, default 0.3x, 0.5x, 0.7x of dense);
* full fine-tunes spent, trials run, and the seconds those trials took (prune, measure, proxy, fine-tune, as
  each record times them: the dense set-up and the held-out scoring, alike for every agent, are left out, so a
  resumed run reports what the uninterrupted one would).

``--agents`` may also name ``tpe+warm``, ``nsga2+warm`` or ``random+warm``: that agent with ``--warm-start``
``--warm`` (its first trials are the baselines' uniform width and depth plans); a ``+screen`` suffix (``tpe+screen``,
``tpe+warm+screen``) adds multi-fidelity screening, ``autoprune search --proxy-keep`` ``--proxy-keep``: only candidates
whose proxy (the score right after pruning) ranks in that top share against latency get the full fine-tune, so the
agent sees more candidates for the same fine-tunes. Each run reports the Spearman rank correlation of proxy and
validation score over its fine-tuned candidates (``spearman``), the evidence the proxy deserves that trust.

Writes ``OUT/search_value.json`` (every run and the summary) and ``OUT/search_value.png`` (every
agent's fronts on one plot), prints one JSON line per run and a table. Check it runs with:

    python bench/search_value.py --finetunes 2 --seeds 1 --agents global,uniform --random-factor 1

A full comparison (digits, 3 seeds, 12 fine-tunes each, random also 48):

    python bench/search_value.py --task digits --seeds 3 --finetunes 12
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AGENTS = "tpe,nsga2,rl,random,uniform,global"
BASE_TASK_ENV = "AUTOPRUNE_VALUE_TASK"
FRACTION_ENV = "AUTOPRUNE_VALUE_TRAIN_FRACTION"


def bench_task():
    """The task named by ``$AUTOPRUNE_VALUE_TASK``, fine-tuned on ``$AUTOPRUNE_VALUE_TRAIN_FRACTION`` of its
    training set (a fixed random subset); searches name it ``bench.search_value:bench_task`` so workers
    rebuild the same task."""
    from dataclasses import replace

    import torch
    from torch.utils.data import Subset

    from autoprune.task import resolve_task

    task = resolve_task(os.environ[BASE_TASK_ENV])
    fraction = float(os.environ.get(FRACTION_ENV, "1"))
    if fraction >= 1:
        return task
    train = task.train_set
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    return replace(task, train_set=Subset(train, order[: max(1, int(fraction * len(train)))].tolist()))


def held_out(task):
    """The task's test split, or its validation split with a warning (then nothing is held out)."""
    test = getattr(task, "test_set", None)
    if test is not None:
        return test, "test"
    warnings.warn(f"task {task.name!r} has no test_set: scores below are on the validation split the "
                  "search selected on (not held out)", stacklevel=2)
    print(f"WARNING: task {task.name!r} has no test_set; scoring on its validation split (not held out)",
          flush=True)
    return task.val_set, "val"


def fine_tuned(record) -> bool:
    """Whether the trial spent a full fine-tune (complete, not a duplicate of an earlier trial)."""
    return record.state == "complete" and record.duplicate_of is None


def prefix(records, finetunes: int) -> list:
    """The trials (in number order) up to the one that spent the ``finetunes``-th fine-tune."""
    out, spent = [], 0
    for r in sorted(records, key=lambda r: r.number):
        if spent >= finetunes:
            break
        out.append(r)
        spent += fine_tuned(r)
    return out


@dataclass
class Run:
    """One search of one agent and seed, with every complete trial's held-out score."""

    agent: str
    seed: int
    records: list
    dense_val: float
    dense_test: float
    test: dict[int, float] = field(default_factory=dict)


def run_agent(agent: str, seed: int, finetunes: int, args, out: Path) -> Run:
    """Search with ``agent`` until ``finetunes`` fine-tunes are spent (or the trial cap is reached)."""
    from autoprune.config import SearchConfig, load_profile, load_space
    from autoprune.results.search import run_search

    finetune = {"epochs": args.epochs, **({"lr": args.lr} if args.lr else {})}
    base, *suffixes = agent.split("+")  # tpe+warm+screen: tpe with --warm-start args.warm, --proxy-keep args.proxy_keep
    warm = args.warm if "warm" in suffixes else 0
    keep = args.proxy_keep if "screen" in suffixes else 1.0
    profile, space = load_profile(args.hw), load_space(args.space)
    # the recipe is in the name: a run folder resumes only with its own recipe (it is not an identity field)
    label = f"{agent}-k{keep:g}" if keep < 1 else agent
    folder = out / f"{label}-f{finetunes}-e{args.epochs}-t{args.train_fraction:g}-lr{args.lr or 'task'}-s{seed}"
    trials, cap = finetunes, finetunes * args.max_trials_factor
    while True:
        config = SearchConfig(task="bench.search_value:bench_task", profile=profile, space=space, agent=base,
                              trials=trials, seed=seed, finetune=finetune, predictor="off", warm_start=warm,
                              proxy_keep=keep)
        outcome = run_search(config, folder)
        spent = sum(fine_tuned(r) for r in outcome.records)
        if spent >= finetunes or trials >= cap:
            break
        trials = min(cap, trials + finetunes - spent)
    return Run(agent=agent, seed=seed, records=outcome.records, dense_val=outcome.dense.accuracy,
               dense_test=float("nan"))


def score_held_out(run: Run, task, dataset) -> None:
    """Re-score every fine-tuned candidate (and the dense model) on ``dataset``; duplicates share their original's."""
    from autoprune.pruning.saving import load_pruned
    from autoprune.training import evaluate

    run.dense_test = evaluate(task.build_model(), dataset, task.metric)
    for r in run.records:
        if fine_tuned(r) and r.model_path:
            run.test[r.number] = evaluate(load_pruned(Path(r.model_path).parent, task), dataset, task.metric)
    for r in run.records:
        if r.state == "complete" and r.duplicate_of in run.test:
            run.test[r.number] = run.test[r.duplicate_of]


def share(record) -> float:
    """Latency as a share of dense, measured interleaved with it."""
    return 1.0 / record.speedup


def front_of(records) -> list:
    """The validation Pareto front (score up, latency share down) of the complete, measured trials."""
    from autoprune.search.pareto import pareto_front

    pool = [r for r in records if r.state == "complete" and r.duplicate_of is None and r.speedup]
    keep = pareto_front([(r.accuracy, share(r)) for r in pool], [True, False])
    return sorted((pool[i] for i in keep), key=share)


def summarise(run: Run, label: str, finetunes: int, budgets: list[float], reference: float) -> dict:
    """The figures of ``run``'s first ``finetunes`` fine-tunes."""
    from autoprune.search.fidelity import spearman
    from autoprune.search.pareto import hypervolume

    records = prefix(run.records, finetunes)
    both = [r for r in records if fine_tuned(r) and r.proxy is not None]
    front = [r for r in front_of(records) if r.number in run.test]
    points = [(run.test[r.number], share(r)) for r in front]
    best = {}
    for b in budgets:
        within = [r for r in records if r.state == "complete" and r.speedup and share(r) <= b and r.number in run.test]
        pick = max(within, key=lambda r: (r.accuracy, -share(r))) if within else None
        best[f"best@{b}x"] = None if pick is None else run.test[pick.number]
        best[f"best_val@{b}x"] = None if pick is None else pick.accuracy
    return {"agent": label, "seed": run.seed, "finetunes": sum(fine_tuned(r) for r in records),
            "trials": len(records), "rejected": sum(r.state == "rejected" for r in records),
            "duplicates": sum(r.duplicate_of is not None for r in records),
            "hypervolume": hypervolume(points, [True, False], [reference, 1.0]) if points else 0.0, **best,
            "spearman": spearman([r.proxy for r in both], [r.accuracy for r in both]),
            "trial_s": round(sum(sum(r.seconds.values()) for r in records), 1),
            "dense_val": run.dense_val, "dense_test": run.dense_test,
            "front": [{"trial": r.number, "latency_share": round(share(r), 4), "val": r.accuracy,
                       "test": run.test[r.number], "plan": {n: g["ratio"] for n, g in r.plan.items()}} for r in front]}


def _fmt(values: list, scale: float = 1.0, digits: int = 4) -> str:
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return "none"
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    miss = f" ({len(values) - len(vals)} none)" if len(vals) < len(values) else ""
    return f"{statistics.mean(vals):.{digits}f} ± {spread:.{digits}f}{miss}"


def summary_table(rows: list[dict], budgets: list[float]) -> list[dict]:
    """Mean and standard deviation over seeds per agent label."""
    out = []
    for label in dict.fromkeys(r["agent"] for r in rows):
        mine = [r for r in rows if r["agent"] == label]
        entry = {"agent": label, "seeds": len(mine)}
        for key in ("hypervolume", *[f"best@{b}x" for b in budgets], "spearman", "finetunes", "trials", "trial_s"):
            vals = [r[key] for r in mine if r[key] is not None]
            entry[f"{key}_mean"] = statistics.mean(vals) if vals else None
            entry[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            entry[f"{key}_none"] = len(mine) - len(vals)
        out.append(entry)
    return out


def plot(rows: list[dict], budgets: list[float], path: Path, title: str) -> None:
    """Every agent's test-scored fronts (one line per seed, one colour per agent) on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    colours = plt.get_cmap("tab10")
    labels = list(dict.fromkeys(r["agent"] for r in rows))
    for i, label in enumerate(labels):
        for j, row in enumerate(r for r in rows if r["agent"] == label):
            pts = sorted((p["latency_share"], p["test"]) for p in row["front"])
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.step(xs, ys, where="post", color=colours(i % 10), alpha=0.8, lw=1.2, marker="o", ms=3,
                    label=label if j == 0 else None)
    dense = [r["dense_test"] for r in rows]
    ax.plot([1.0], [statistics.mean(dense)], marker="*", ms=14, color="black", ls="none", label="dense")
    for b in budgets:
        ax.axvline(b, color="grey", ls=":", lw=1)
    ax.set_xlabel("latency / dense (measured interleaved)")
    ax.set_ylabel("held-out score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", help="registered task name or module:function")
    parser.add_argument("--agents", default=AGENTS)
    parser.add_argument("--finetunes", type=int, default=12, help="full fine-tunes per agent and seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-factor", type=int, default=4, help="random search also gets this x the fine-tunes")
    parser.add_argument("--max-trials-factor", type=int, default=3,
                        help="stop a run after this x --finetunes trials even if fewer fine-tunes were spent")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tune epochs (the same recipe for everyone)")
    parser.add_argument("--lr", type=float, default=None, help="fine-tune learning rate (default: the task's)")
    parser.add_argument("--train-fraction", type=float, default=1.0, help="share of the training set fine-tuned on")
    parser.add_argument("--budgets", default="0.3,0.5,0.7", help="latency budgets as shares of dense")
    parser.add_argument("--reference", type=float, default=0.5, help="hypervolume reference score (all agents)")
    parser.add_argument("--proxy-keep", type=float, default=0.25,
                        help="the multi-fidelity share (`autoprune search --proxy-keep`) of agents named AGENT+screen")
    parser.add_argument("--warm", type=int, default=4,
                        help="the warm start (`autoprune search --warm-start`) of the agents named AGENT+warm")
    parser.add_argument("--hw", default=str(ROOT / "hw_profiles/cpu-onnxruntime.yaml"))
    parser.add_argument("--space", default=str(ROOT / "search_spaces/default.yaml"))
    parser.add_argument("--out", default=None, help="default: results/bench-search-value/<task>")
    args = parser.parse_args(argv)
    os.environ[BASE_TASK_ENV] = args.task
    os.environ[FRACTION_ENV] = str(args.train_fraction)
    budgets = [float(b) for b in args.budgets.split(",")]
    out = Path(args.out or ROOT / "results/bench-search-value" / args.task.replace(":", "-").replace("/", "-"))
    out.mkdir(parents=True, exist_ok=True)

    from autoprune.config import SearchConfig, load_profile, load_space

    task = SearchConfig(task="bench.search_value:bench_task", profile=load_profile(args.hw),
                        space=load_space(args.space), finetune={"epochs": args.epochs}).trial_task()
    dataset, split = held_out(task)
    rows: list[dict] = []
    for seed in range(args.seeds):
        for agent in args.agents.split(","):
            factor = args.random_factor if agent == "random" else 1
            run = run_agent(agent, seed, args.finetunes * factor, args, out)
            score_held_out(run, task, dataset)
            for n in dict.fromkeys([args.finetunes, args.finetunes * factor]):
                label = agent if n == args.finetunes else f"{agent}x{factor}"
                row = summarise(run, label, n, budgets, args.reference)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "front"}), flush=True)
    summary = summary_table(rows, budgets)
    settings = {"task": args.task, "split": split, "finetunes": args.finetunes, "seeds": args.seeds,
                "random_factor": args.random_factor, "epochs": args.epochs, "lr": args.lr,
                "train_fraction": args.train_fraction, "budgets": budgets, "reference": [args.reference, 1.0],
                "hw": args.hw, "space": args.space}
    (out / "search_value.json").write_text(json.dumps({"settings": settings, "summary": summary, "runs": rows},
                                                      indent=1))
    plot(rows, budgets, out / "search_value.png",
         f"{args.task}: fronts on {split} ({args.finetunes} fine-tunes, {args.seeds} seed(s))")

    header = ["agent", "fine-tunes", "trials", "hypervolume", *[f"best {split} % @{b}x" for b in budgets],
              "proxy-val Spearman", "trial s"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label in dict.fromkeys(r["agent"] for r in rows):
        mine = [r for r in rows if r["agent"] == label]
        cells = [label, f'{statistics.mean(r["finetunes"] for r in mine):.1f}',
                 f'{statistics.mean(r["trials"] for r in mine):.1f}', _fmt([r["hypervolume"] for r in mine]),
                 *[_fmt([r[f"best@{b}x"] for r in mine], 100, 1) for b in budgets],
                 _fmt([r["spearman"] for r in mine], digits=2),
                 f'{statistics.mean(r["trial_s"] for r in mine):.0f}']
        print("| " + " | ".join(cells) + " |")
    dense = statistics.mean(r["dense_test"] for r in rows)
    print(f"\ndense {split} score {dense * 100:.1f}; fine-tune: {args.epochs} epoch(s) on {args.train_fraction:.0%} "
          f"of the training set; hypervolume reference ({args.reference}, 1.0 x dense latency); "
          f"latency = interleaved ratio to dense; {args.seeds} seed(s); written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
