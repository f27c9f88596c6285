"""The bad-input corpus (``tests/data/bad_inputs.py``): one line on stderr, exit 2, no traceback, nothing written.

Every case runs in a fresh folder holding only its own files (and, when it names ``{run}``, a
copy of a finished tiny search); the folder's listing must be the same after the command (SQLite
may leave its ``-wal``/``-shm`` side files). Most cases call ``autoprune.cli.main`` in-process;
``subprocess`` cases run ``python -m autoprune`` to check the real console behaviour.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autoprune.cli import main
from tests.conftest import ROOT
from tests.data.bad_inputs import CASES, TASK, Case

GOOD_HW = "name: t-fake\nbackend: fake\nwarmup_s: 0\nmin_runs: 4\nrepeats: 2\nmax_cv: 1.0\nround_to: 4\n"
GOOD_SPACE = "name: s-good\nmin_channels: 4\n"
SIDE_FILES = ("-wal", "-shm", "-journal")


@pytest.fixture(scope="module")
def corpus_base(tmp_path_factory) -> dict[str, Path]:
    """A valid profile and space, and a finished 2-trial search on them (the fake backend, the tiny task, no
    fine-tuning: the corpus needs a run folder, not good models)."""
    import autoprune.testing.fakes  # noqa: F401  (registers the `fake` backend)
    from autoprune.config import SearchConfig, load_profile, load_space
    from autoprune.results.search import run_search

    base = tmp_path_factory.mktemp("corpus")
    (base / "hw.yaml").write_text(GOOD_HW)
    (base / "space.yaml").write_text(GOOD_SPACE)
    config = SearchConfig(task=TASK, profile=load_profile(base / "hw.yaml"), space=load_space(base / "space.yaml"),
                          agent="random", trials=2, seed=0, finetune={"epochs": 0})
    run_search(config, base / "run")
    with sqlite3.connect(base / "run" / "study.db") as db:  # fold the WAL in, so a copy is the whole database
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in SIDE_FILES:
        Path(f"{base / 'run' / 'study.db'}{suffix}").unlink(missing_ok=True)
    return {"hw": base / "hw.yaml", "space": base / "space.yaml", "run": base / "run"}


def _corrupt_db(run: Path) -> None:
    (run / "study.db").write_bytes(b"this is not a database " * 200)


def _truncate_db(run: Path) -> None:
    data = (run / "study.db").read_bytes()
    (run / "study.db").write_bytes(data[: len(data) // 3])


def _empty_db(run: Path) -> None:
    (run / "study.db").unlink()
    with sqlite3.connect(run / "study.db") as db:
        db.execute("CREATE TABLE other (x INTEGER)")


def _foreign_weights(run: Path) -> None:
    import torch

    from tests.tiny_task import TinyResNet

    torch.save(TinyResNet(widths=(8, 24)).state_dict(), run / "trials" / "0000" / "model.pt")


#: damage done to the case's run copy before the command
SETUPS = {
    "corrupt_db": _corrupt_db,
    "truncate_db": _truncate_db,
    "empty_db": _empty_db,
    "drop_dense": lambda run: (run / "dense.json").unlink(),
    "drop_weights": lambda run: (run / "trials" / "0000" / "model.pt").unlink(),
    "foreign_weights": _foreign_weights,
}


@pytest.fixture()
def readonly_mount(tmp_path):
    """A folder on a read-only file system (a tmpfs remounted read-only); skips where mounting is not allowed."""
    point = tmp_path / "ro"
    point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs root)")

    def freeze() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)

    yield point, freeze
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")
            if not p.name.endswith(SIDE_FILES)}


def _fill(text: str | bytes, values: dict[str, str]) -> str | bytes:
    if isinstance(text, bytes):
        return text
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(case: Case, corpus_base, tmp_path, request, capsys) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    uses_run = any("{run}" in a for a in case.argv) or any(k.startswith("run/") for k in case.files)
    run = folder / "run"
    if case.setup == "readonly_run":
        point, freeze = request.getfixturevalue("readonly_mount")
        run = point / "run"
    values = {"tmp": str(folder), "run": str(run), "hw": str(corpus_base["hw"]), "space": str(corpus_base["space"]),
              "root": str(ROOT)}
    if uses_run:
        shutil.copytree(corpus_base["run"], run)
    for name, text in case.files.items():
        path = folder / _fill(name, values)
        path.parent.mkdir(parents=True, exist_ok=True)
        content = _fill(text, values)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.setup == "readonly_run":
        freeze()
    elif case.setup is not None:
        SETUPS[case.setup](run)
    before = _listing(folder), (_listing(run) if run.exists() else set())
    argv = [_fill(a, values) for a in case.argv]

    if case.subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, "-m", "autoprune", *argv], capture_output=True, text=True, cwd=folder,
                                env=env, timeout=120)
        code, err = result.returncode, result.stderr
    else:
        cwd = os.getcwd()
        os.chdir(folder)  # a command that writes a default path writes it here, where the check sees it
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse
            code = exit.code
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err

    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}; stderr: {err}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("autoprune"), lines[0]
    assert case.expect in lines[0], lines[0]
    assert (_listing(folder), _listing(run) if run.exists() else set()) == before, "the failed command wrote files"


def test_a_full_disk_is_refused_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    import shutil as shutil_module
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    args = ["sensitivity", "--task", TASK, "--hw", str(tmp_path / "hw.yaml"), "--space",
            str(ROOT / "search_spaces/default.yaml"), "--out", str(tmp_path / "s.json")]
    (tmp_path / "hw.yaml").write_text(GOOD_HW.replace("backend: fake", "backend: onnxruntime"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"autoprune: error: {tmp_path}: only 1.0 MiB free on its disk; free space or choose another --out"]
