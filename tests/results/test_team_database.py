"""A team study database: searches, a sweep, and report/pareto/pick/export from a real PostgreSQL server alone.

The server is a private one the module starts (``tests/postgres.py``: ``initdb``/``pg_ctl`` on a free
loopback port) and stops; the tests skip only where PostgreSQL or its driver is not installed.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.config import SearchConfig, SearchSpace
from autoprune.errors import ConfigError
from autoprune.results.run import load_run
from autoprune.results.search import run_search
from autoprune.results.sweep import run_sweep
from autoprune.search.study import open_storage
from tests.conftest import ROOT
from tests.postgres import server_or_skip

TASK = "tests.tiny_task:tiny_task"
#: the CLI with the fake latency backend registered (a subprocess has not imported autoprune.testing)
CLI = [sys.executable, "-c",
       "import sys, autoprune.testing.fakes; from autoprune.cli import main; sys.exit(main(sys.argv[1:]))"]
FAKE_PROFILE = "name: test-fake\nbackend: fake\nwarmup_s: 0.0\nmin_runs: 4\nrepeats: 2\nmax_cv: 1.0\nround_to: 4\n"


@pytest.fixture(scope="module")
def pg_url():
    with server_or_skip() as url:
        yield url


def _search_cmd(profile: Path, out: Path, url: str, study: str, agent: str, trials: int) -> list[str]:
    return [*CLI, "search", "--task", TASK, "--hw", str(profile), "--space", str(ROOT / "search_spaces/default.yaml"),
            "--agent", agent, "--trials", str(trials), "--seed", "3", "--out", str(out), "--storage", url,
            "--study", study]


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_searches_and_a_sweep_share_one_database_and_read_back_from_it_alone(tmp_path: Path, pg_url: str,
                                                                              fake_profile, capsys) -> None:
    profile = tmp_path / "fake.yaml"
    profile.write_text(FAKE_PROFILE)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    # two searches at once into one empty database (both create the schema: the race must not matter)
    procs = [subprocess.Popen(_search_cmd(profile, tmp_path / name, pg_url, name, agent, 3), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, agent in (("alpha", "tpe"), ("beta", "random"))]
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
    # and a sweep (in this process: the fake backend is registered here), one study per search
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: nightly\nsearches:\n  - {{name: gamma, task: '{TASK}', profile: {profile}, agent: random,"
                     " trials: 2, seed: 4}\n")
    run_sweep(sweep, tmp_path / "sweep", storage=pg_url)
    names = {s.study_name for s in open_storage(pg_url).get_all_studies()}
    assert names == {"alpha", "beta", "nightly.gamma"}

    # a fresh folder, on "another machine": everything comes from the database
    for study, trials in (("alpha", 3), ("beta", 3), ("nightly.gamma", 2)):
        data = load_run(tmp_path / "fresh" / study, storage=pg_url, study=study)
        original = load_run(tmp_path / study if "." not in study else tmp_path / "sweep/gamma")
        assert len(data.records) == trials
        assert [r.to_dict() for r in data.records] == [r.to_dict() for r in original.records]
        assert data.dense == original.dense and data.config.to_dict() == original.config.to_dict()
        assert [r.number for r in data.front] == [r.number for r in original.front]
    fresh = tmp_path / "fresh-cli"
    code, out, err = _run(["pareto", str(fresh), "--storage", pg_url, "--study", "alpha", "--json"], capsys)
    assert code == 0, err
    front = json.loads(out)["front"]
    assert front and json.loads((fresh / "storage.json").read_text()) == {"url": pg_url, "study": "alpha"}
    # the folder now names its database: later commands need no --storage
    code, out, err = _run(["pick", str(fresh), "--knee"], capsys)
    assert code == 0 and "picked trial" in out, err
    code, out, err = _run(["report", str(fresh)], capsys)
    assert code == 0 and (fresh / "report.html").is_file(), err
    trial = front[0]["trial"]
    assert not (fresh / "trials").exists()  # weights are fetched only when a command needs them
    code, out, err = _run(["export", str(fresh), "--trial", str(trial), "--format", "torch",
                           "--out", str(tmp_path / "export")], capsys)
    assert code == 0, err
    assert (fresh / f"trials/{trial:04d}/model.pt").read_bytes() == \
        (tmp_path / f"alpha/trials/{trial:04d}/model.pt").read_bytes()
    assert (tmp_path / "export/state_dict.pt").is_file()

    # resume from the database alone: a fresh folder, one more trial; nothing is repeated or re-measured
    config = SearchConfig(task=TASK, profile=fake_profile, space=SearchSpace(name="t", min_channels=4), agent="tpe",
                          trials=1, seed=3)
    with pytest.raises(ConfigError, match="study `alpha` in postgresql://.*different `space`"):
        run_search(config, tmp_path / "resumed", storage=pg_url, study="alpha")
    original = load_run(tmp_path / "alpha")
    resumed = run_search(dataclasses.replace(original.config, trials=4), tmp_path / "resumed",
                         storage=pg_url, study="alpha")
    assert [r.number for r in resumed.records] == [0, 1, 2, 3]
    assert [r.to_dict() for r in resumed.records[:3]] == [r.to_dict() for r in original.records]
    assert resumed.dense == original.dense


def test_a_study_that_is_not_there_is_named_with_those_that_are(tmp_path: Path, pg_url: str, capsys) -> None:
    run_search(SearchConfig(task=TASK, profile=_fake(), space=SearchSpace(name="t", min_channels=4), agent="random",
                            trials=1, seed=0), tmp_path / "one", storage=pg_url, study="present")
    code, _, err = _run(["pareto", str(tmp_path / "fresh"), "--storage", pg_url, "--study", "absent"], capsys)
    assert code == 2 and "no study `absent`" in err and "present" in err and len(err.strip().splitlines()) == 1


def _fake():
    from autoprune.testing.fakes import fake_profile

    return fake_profile()


def test_an_unreachable_server_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is not installed")
    from tests.postgres import _free_port

    url = f"postgresql://someone:secret@127.0.0.1:{_free_port()}/db"
    code, _, err = _run(["search", "--task", TASK, "--trials", "1", "--out", str(tmp_path / "r"), "--storage", url],
                        capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot open the study database" in err and "secret" not in err and "Traceback" not in err


def test_a_missing_driver_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("psycopg2", "psycopg2.extensions", "psycopg2.extras"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    code, _, err = _run(["report", str(tmp_path / "r"), "--storage", "postgresql://u:pw@127.0.0.1:1/db"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the database driver is not installed" in err and "autoprune[postgres]" in err and ":pw@" not in err


def test_a_damaged_storage_json_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "storage.json").write_text('{"url": 3}')
    code, _, err = _run(["pareto", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "storage.json: expected" in err, err
