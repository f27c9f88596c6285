"""A real two-node Ray cluster on loopback: the driver joins it by address, only the second node measures.

The head and the worker node are separate ``ray start --block`` processes (own temp folders, one CPU
each); only the worker node offers the profile's measuring resource. The task module exists only in
the driver's folder, so it reaches the nodes through the job's ``runtime_env``; only the driver
writes the run folder.

Loopback only: every process runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps Ray's
sockets on 127.0.0.1 (without it Ray swaps 127.0.0.1 for the machine's external address and binds
every interface). ``ray start`` then refuses to add a second node, so the worker node is started
through ``ray start``'s own entry point with that one check lifted (``JOIN_ON_LOOPBACK``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from autoprune.results.run import RunFolder
from autoprune.search.study import finished_records
from tests.conftest import ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RESOURCE = "measure:test-ort"
#: the test cluster's auth token
TOKEN = uuid.uuid4().hex
RAY = str(Path(sys.executable).parent / "ray")
#: ``ray start`` for a second node on loopback: its multi-node check lifted, every address kept at 127.0.0.1
JOIN_ON_LOOPBACK = """
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
services.get_node_ip_address = lambda address=None: "127.0.0.1"
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""
#: the task lives only here (the driver's folder), never on a node's path
TASK_MODULE = '''"""A user's task module that no Ray node has."""
from tests.tiny_task import tiny_task


def cluster_task():
    return tiny_task()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    proc: subprocess.Popen
    temp_dir: Path

    def raylet(self) -> psutil.Process:
        return next(p for p in psutil.Process(self.proc.pid).children(recursive=True) if p.name() == "raylet")

    def stop(self) -> None:
        """Kill this node's processes (``ray stop`` would stop every Ray of the machine)."""
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(self.proc.pid).children(recursive=True)
            for p in family:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(family, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _start_node(args: list[str], env: dict[str, str], *, join: bool) -> Node:
    # short paths: Ray's unix sockets live in the temp folder (at most 107 characters)
    temp_dir = Path(tempfile.mkdtemp(prefix="apray-", dir="/tmp"))
    ray = [sys.executable, "-c", JOIN_ON_LOOPBACK] if join else [RAY]
    cmd = [*ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir), "--num-cpus", "1",
           "--disable-usage-stats", "--dashboard-agent-listen-port", str(_free_port()),
           "--dashboard-agent-grpc-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
           "--runtime-env-agent-port", str(_free_port()), *args]
    with open(temp_dir / "start.log", "wb") as log:  # a file, not a pipe: a full pipe would block the node
        proc = subprocess.Popen(cmd, env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Node(proc=proc, temp_dir=temp_dir)


def _start_worker(address: str) -> Node:
    """A node joining ``address``, the only one offering the measuring resource."""
    return _start_node(["--address", address, "--resources", json.dumps({RESOURCE: 1})], _env(), join=True)


def _wait_for_nodes(address: str, count: int, nodes: list[Node], timeout_s: float = 60) -> None:
    """Until ``count`` nodes are alive (``ray status`` there); a node that cannot start fails the test (a skip once
    hid that no node could start on a machine without a Ray token)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for node in nodes:
            if node.proc.poll() is not None:
                log = (node.temp_dir / "start.log").read_text(errors="replace")
                pytest.fail(f"`ray start` could not start a node: {log[-600:]!r}")
        status = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True,
                                env=_env(), timeout=30)
        if status.returncode == 0 and status.stdout.count("node_") >= count and "Pending:" in status.stdout:
            active = status.stdout.split("Active:")[1].split("Pending:")[0]
            if active.count("node_") >= count:
                return
        time.sleep(1)
    pytest.fail(f"the {count} Ray nodes did not come up within {timeout_s:g} s")


def _env() -> dict[str, str]:
    """The nodes' and drivers' environment: autoprune (and ``tests``) from this checkout, Ray on loopback, token
    auth with this test session's own token (a fresh machine has no ``~/.ray/auth_token``; a head told to use
    token auth without one refuses to start)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": TOKEN}


@dataclass
class Cluster:
    address: str
    job_server: str
    head: Node
    worker: Node

    def restart_worker(self) -> None:
        """A new worker node with the measuring resource, in place of the old one (killed or not)."""
        self.worker.stop()
        self.worker = _start_worker(self.address)
        _wait_for_nodes(self.address, 2, [self.head, self.worker])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if shutil.which(RAY) is None:
        pytest.skip(f"no `ray` command at {RAY}")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # node deaths are noticed in ~2 s instead of Ray's default ~30 s (the kill test waits on it)
    health = json.dumps({"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                         "health_check_timeout_ms": 500})
    nodes: list[Node] = []
    cluster: Cluster | None = None
    try:
        jobs = _free_port()
        nodes.append(_start_node(["--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                                  str(jobs), "--ray-client-server-port", str(_free_port()), "--system-config", health],
                                 _env(), join=False))
        time.sleep(3)
        nodes.append(_start_worker(address))
        _wait_for_nodes(address, 2, nodes)
        cluster = Cluster(address=address, job_server=f"http://127.0.0.1:{jobs}", head=nodes[0], worker=nodes[1])
        yield cluster
    finally:
        workers = [cluster.worker] if cluster is not None else []  # a test may have replaced the worker node
        for node in {id(n): n for n in [*workers, *reversed(nodes)]}.values():
            node.stop()


def _prepare(folder: Path, trials: int) -> list[str]:
    """The driver's folder (task module, profile, space, config) and its search command."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clustertask.py").write_text(TASK_MODULE)
    profile = {"name": "test-ort", "backend": "onnxruntime", "threads": 1, "warmup_s": 0.02, "min_runs": 20,
               "repeats": 2, "max_cv": 10.0, "round_to": 4, "ray_resource": RESOURCE}
    (folder / "fast.yaml").write_text(yaml.safe_dump(profile))
    (folder / "space.yaml").write_text(yaml.safe_dump({"name": "t", "min_channels": 4}))
    config = {"task": "clustertask:cluster_task", "profile": "fast.yaml", "space": "space.yaml", "agent": "random",
              "trials": trials, "seed": 3, "min_speedup": 0.0, "finetune": {"epochs": 1}}
    (folder / "search.yaml").write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "autoprune", "search", "--config", "search.yaml", "--out", "run"]


def _finished(db: Path) -> int:
    import sqlite3

    with contextlib.suppress(sqlite3.Error), sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    return 0


def test_search_on_a_cluster_writes_everything_on_the_driver(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "driver"
    cmd = _prepare(folder, trials=2) + ["--workers", "2", "--address", cluster.address]
    result = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    run = RunFolder(folder / "run")
    records = finished_records(run.open_study(["maximize", "minimize"], create=False))
    assert sorted(r.number for r in records) == [0, 1]
    assert all(r.state.value == "complete" and r.latency is not None for r in records), records
    for r in records:  # written by the driver, under its --out
        assert (folder / r.model_path).resolve().is_relative_to((folder / "run").resolve())  # --out was relative
        assert (run.trial_folder(r.number) / "model.pt").is_file()
        assert (run.trial_folder(r.number) / "plan.json").is_file()
    # the dense reference was measured on the only node with the measuring resource
    assert json.loads((folder / "run/dense.json").read_text())["latency"]["profile"] == "test-ort"


def test_a_sweep_submitted_to_the_cluster_measures_on_the_measuring_node(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "driver"
    _prepare(folder, trials=2)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "cluster", "execution": {"workers": 2},
        "searches": [{"name": "one", "task": "clustertask:cluster_task", "profile": "fast.yaml",
                      "space": "space.yaml", "agent": "random", "trials": 2, "min_speedup": 0.0,
                      "finetune": {"epochs": 1}}]}))
    out = tmp_path / "out"

    def sweep(*args: str) -> str:
        """``autoprune sweep ...`` in its own process (Ray's auth state is per process), from the driver's folder,
        which is uploaded as the job's working_dir: the task module exists only there."""
        result = subprocess.run([sys.executable, "-m", "autoprune", "sweep", *args, "--address", cluster.job_server],
                                cwd=folder, env=_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip()

    job = sweep("submit", "sweep.yaml", "--out", str(out), "--python", sys.executable)
    deadline, status = time.time() + 240, ""
    while time.time() < deadline and status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(2)
        status = sweep("status", job)
    logs = sweep("logs", job)
    assert status == "SUCCEEDED", logs[-3000:]
    assert (out / "report.md").is_file()
    records = finished_records(RunFolder(out / "one").open_study(["maximize", "minimize"], create=False))
    assert sorted(r.number for r in records) == [0, 1]
    assert all(r.state.value == "complete" and r.latency is not None for r in records), records


def test_refuses_a_cluster_without_the_measuring_resource(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "driver"
    cmd = _prepare(folder, trials=1) + ["--workers", "2", "--address", cluster.address]
    (folder / "fast.yaml").write_text((folder / "fast.yaml").read_text().replace(RESOURCE, "measure:nowhere"))
    result = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "measure:nowhere" in line
    assert f"ray start --address {cluster.address} --resources '{{\"measure:nowhere\": 1}}'" in line


def test_losing_the_measuring_node_loses_no_trial_and_its_return_is_used(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "driver"
    cmd = _prepare(folder, trials=3) + ["--workers", "2", "--address", cluster.address, "--max-retries", "1"]
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db = folder / "run/study.db"
    deadline = time.time() + 150
    while time.time() < deadline and not (db.is_file() and _finished(db) >= 1) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before the node could be killed"
    cluster.worker.raylet().send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)
    study = RunFolder(folder / "run").open_study(["maximize", "minimize"], create=False)
    records = finished_records(study)
    assert sorted(r.number for r in records) == [0, 1, 2], stderr[-2000:]
    assert all(r.state.value in ("complete", "failed") for r in records)
    assert all(r.reason for r in records if r.state.value == "failed")
    assert any(r.state.value == "complete" for r in records)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    # nothing ran twice: every plan fine-tuned at most once; a re-proposed plan is a duplicate of its original
    ran = [json.dumps(r.plan, sort_keys=True) for r in records if r.duplicate_of is None]
    assert len(set(ran)) == len(ran)
    assert proc.returncode in (0, 1), stderr[-2000:]  # 1: every trial after the kill failed (said, not a crash)

    # the node comes back: the same search resumed with one more trial measures on it again
    cluster.restart_worker()
    before = {r.number: r.state for r in records}
    result = subprocess.run([*cmd, "--trials", "4"], cwd=folder, env=_env(), capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = finished_records(RunFolder(folder / "run").open_study(["maximize", "minimize"], create=False))
    assert {r.number: r.state for r in resumed if r.number in before} == before  # nothing finished re-ran
    [new] = [r for r in resumed if r.number not in before]
    assert new.state.value == "complete" and new.latency is not None, new
