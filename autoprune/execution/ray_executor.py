"""Jobs on Ray: every job a Ray task on a worker, latency on one dedicated measurement actor per device.

Placement. Every job (``execution/jobs.py``) runs as a Ray task on a worker, which rebuilds the
search's runner from plain data (cached per process). A worker never measures latency: it
prunes, then hands the pruned candidate to the *measurement actor* of the search's hardware
profile, which holds the dense model prepared and measures candidate and dense interleaved (the
dense reference is measured there too). With a latency predictor the actor holds it as well and
predicts for the workers: layer shapes missing from its table are timed on the measured device,
never on a worker. The actor needs one unit of the profile's Ray custom resource
(``measure_resource``: the profile's ``ray_resource``, by default ``autoprune_measure_<profile>``),
declared on the one node that measures that device, so one device measures one model at a time;
fine-tunes and screens go to any node. A local Ray started by autoprune declares it itself; on a
cluster start the measuring node with ``ray start --address HEAD:PORT --resources '{"<resource>": 1}'``,
and a search refuses to start (one line, exit 2, naming that command) while no live node offers it.
While a measurement runs, fine-tune steps on the same machine wait (``execution/core_gate.py``).

No shared disk. Results, fine-tuned weights and quantized files included, come back through the
object store: workers write nothing to the run folder, only the driver does. A user's task module
(``--task mypkg.tasks:my_task``) travels with the job to a cluster joined by address (Ray's
``runtime_env`` ``py_modules``: the top-level package or file, from this machine); data the task
loads is read by the workers from the path or URL the task names.

Faults. A job whose worker process dies (SIGKILL, out of memory, node lost) is resubmitted up
to ``max_retries`` times, then ends as ``job.failed(reason)`` (for a trial: a FAILED record). An
error raised by the job's own code is not retried (it would fail again); it ends that way at once.
A job waiting on the measurement actor while no live node offers the measuring resource (the
measuring node was lost) fails with that reason instead of waiting forever.

Security. A local Ray binds 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the
environment before Ray is imported, plus the node address) and starts no dashboard.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import socket
import sys
import sysconfig
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from autoprune.config import ExecutionConfig, HardwareProfile, SearchConfig, search_config_from_dict
from autoprune.errors import BackendUnavailable
from autoprune.execution.core_gate import CoreGate
from autoprune.execution.executor import Executor
from autoprune.execution.jobs import Done, Job, Result
from autoprune.execution.runner import TrialRunner
from autoprune.hardware.meter import LatencyMeter
from autoprune.hardware.predictor import LatencyPredictor
from autoprune.latency import LatencyStats

if TYPE_CHECKING:
    from torch import nn

    from autoprune.inputs import Inputs

LOOPBACK = "127.0.0.1"
#: seconds a worker waits on the measurement actor between checks that its node is still alive
STATION_POLL_S = 2.0


def measure_resource(profile: HardwareProfile | str) -> str:
    """The Ray custom resource of the node measuring ``profile`` (a profile, or a profile's name).

    A profile's ``ray_resource`` when it sets one, else ``autoprune_measure_<name>`` (non-alphanumerics as ``_``).
    """
    if isinstance(profile, HardwareProfile):
        if profile.ray_resource:
            return profile.ray_resource
        profile = profile.name
    return "autoprune_measure_" + re.sub(r"[^A-Za-z0-9_]", "_", profile)


def resource_alive(resource: str) -> bool:
    """Whether a live node of the connected Ray cluster offers ``resource``."""
    import ray

    return any(node.get("Alive") and node.get("Resources", {}).get(resource, 0) > 0 for node in ray.nodes())


def measures_here(profile: HardwareProfile) -> bool:
    """Whether measuring ``profile`` uses the measuring node's own processor (not a remote board over RPC)."""
    return getattr(profile.options, "rpc", None) is None


def _site_folders() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib")]


def task_modules(task: str) -> list[ModuleType]:
    """The user's code a ``module:function`` task needs on nodes that never saw it: its top-level package or file.

    Registered tasks, ``SOURCE:MODEL`` tasks and modules installed in the environment (site-packages,
    the standard library, autoprune itself) travel as nothing: every node has them.
    """
    from autoprune.task import TASK_SOURCES

    prefix, colon, _ = task.partition(":")
    if not colon or prefix in TASK_SOURCES:
        return []
    top = prefix.split(".")[0]
    if top == "autoprune":
        return []
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # where resolve_task looks for a user's module too
    try:
        module = importlib.import_module(top)
    except Exception:  # noqa: BLE001 - resolve_task names an unimportable module; nothing to ship here
        return []
    folders = list(getattr(module, "__path__", []))
    where = getattr(module, "__file__", None) or (folders[0] if len(folders) == 1 else None)
    if where is None:  # a namespace package split over several folders: Ray ships one folder per module
        return []
    path = Path(where).resolve()
    if any(path.is_relative_to(folder) for folder in _site_folders()):
        return []
    return [module]


def _import_ray_on_loopback():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    return ray


def start_local_ray(*, num_cpus: int | None = None, num_gpus: int | None = None,
                    measure_profiles: Iterable[HardwareProfile | str] = ()) -> None:
    """Start a private Ray on this machine: 127.0.0.1 only, no dashboard, one measurement slot per profile."""
    ray = _import_ray_on_loopback()
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=False,
             resources={measure_resource(p): 1 for p in measure_profiles}, _node_ip_address=LOOPBACK,
             logging_level="ERROR", log_to_driver=False, configure_logging=True)


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast, with the address in the message, when nothing listens at HOST:PORT."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BackendUnavailable(f"--ray-address {address}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise BackendUnavailable(f"--ray-address {address}: cannot reach the Ray cluster within {timeout_s:g} s "
                                 f"({err.strerror or err}); is `ray start --head` running there?") from None


def connect_ray(execution: ExecutionConfig, measure_profiles: Iterable[HardwareProfile | str],
                py_modules: list[ModuleType] | None = None) -> bool:
    """Join ``execution.address``, the job's cluster, or start a local Ray. True when this call connected.

    ``py_modules``: the user's code the job's workers import (``task_modules``); shipped with the job
    (Ray ``runtime_env``) when joining by address, so nodes that never saw it run it.

    Raises:
        BackendUnavailable: the cluster cannot be reached within ``connect_timeout_s``.
    """
    ray = _import_ray_on_loopback()
    if ray.is_initialized():
        return False
    address = execution.address or os.environ.get("RAY_ADDRESS")  # a Ray Job's driver has RAY_ADDRESS
    if address is None:
        start_local_ray(measure_profiles=measure_profiles)
        return True
    if address != "auto":
        _check_reachable(address, execution.connect_timeout_s)
    runtime_env = {"py_modules": py_modules} if py_modules and execution.address else None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # clusters use token auth by default; present ours
    from ray.exceptions import RayError

    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, runtime_env=runtime_env)
    except (ConnectionError, TimeoutError, RuntimeError, RayError) as err:
        raise BackendUnavailable(f"--ray-address {address}: cannot join the Ray cluster: {err}") from None
    return True


class MeasurementStation:
    """Body of the measurement actor: the dense model prepared once, candidates measured one at a time.

    ``predictor`` is a ``LatencyPredictor.to_dict()`` (plain data, so no file has to exist on the
    measuring node) or None.
    """

    def __init__(self, config: dict[str, Any], dense: list, predictor: dict[str, Any] | None) -> None:
        import ray

        search = search_config_from_dict(config)
        model, example_input = ray.get(dense[0])
        bound = None if predictor is None else LatencyPredictor.from_dict(predictor, search.profile)
        self.meter = LatencyMeter(search.profile, model, example_input, predictor=bound)
        self._gate = CoreGate() if measures_here(search.profile) else None

    def _measuring(self) -> AbstractContextManager[Any]:
        """Fine-tune steps on this machine wait while this holds (``core_gate``); nothing for a remote board."""
        return self._gate.measuring() if self._gate is not None else nullcontext()

    def dense(self) -> LatencyStats:
        with self._measuring():
            return self.meter.dense()

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        with self._measuring():
            return self.meter.compare(candidate)

    def predict(self, candidate: nn.Module) -> float | None:
        with self._measuring():  # layers missing from the table are timed here
            return self.meter.predict(candidate)

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        with self._measuring():
            return self.meter.compare_onnx(onnx, fp32)

    def dense_median_ms(self) -> float:
        with self._measuring():  # measures the dense model when nothing has yet
            return self.meter.dense_median_ms()

    def pid(self) -> int:
        return os.getpid()


class RemoteMeter:
    """Stands in for a LatencyMeter inside a worker: every measurement and prediction goes to the measurement actor.

    ``predicts`` says whether the actor holds a predictor, so a search without one makes no
    prediction round trip (it would queue behind the actor's measurements). ``resource``: the
    measuring node's resource; while no live node offers it, a call raises instead of waiting.
    """

    def __init__(self, station: Any, predicts: bool, resource: str) -> None:
        self.station = station
        self.predicts = predicts
        self.resource = resource
        self._dense_median_ms: float | None = None

    def _get(self, ref: Any) -> Any:
        """The actor's answer; BackendUnavailable once no live node offers the measuring resource.

        Raises:
            BackendUnavailable: the measuring node is gone (the trial is recorded FAILED with this reason).
        """
        import ray
        from ray.exceptions import GetTimeoutError

        while True:
            try:
                return ray.get(ref, timeout=STATION_POLL_S)
            except GetTimeoutError:
                if not resource_alive(self.resource):
                    raise BackendUnavailable(
                        f"the measuring node is gone: no live node of the Ray cluster offers `{self.resource}` "
                        f"(start one with --resources '{{\"{self.resource}\": 1}}')") from None

    def dense(self) -> LatencyStats:
        stats: LatencyStats = self._get(self.station.dense.remote())
        return stats

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        pair: tuple[LatencyStats, LatencyStats] = self._get(self.station.compare.remote(candidate))
        return pair

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        measured: tuple[LatencyStats, ...] = self._get(self.station.compare_onnx.remote(onnx, fp32))
        return measured

    def predict(self, candidate: nn.Module) -> float | None:
        return self._get(self.station.predict.remote(candidate)) if self.predicts else None

    def dense_median_ms(self) -> float:
        """The actor's dense median, fetched once per worker (the actor keeps one value per run too)."""
        if self._dense_median_ms is None:
            self._dense_median_ms = float(self._get(self.station.dense_median_ms.remote()))
        return self._dense_median_ms


_RUNNERS: dict[str, TrialRunner] = {}  # per worker process: the rebuilt runner of the search it serves
_GATE = CoreGate()  # per worker process: fine-tune steps wait while this machine measures


def run_job(config: dict[str, Any], station: Any, dense: list, job: Job, predicts: bool) -> Result:
    """What a Ray worker runs: rebuild the search's runner from plain data (cached), run one job.

    ``dense`` wraps the object-store reference of the driver's dense model (fetched once per
    process and search), so every worker prunes exactly the same weights. ``predicts``: the
    measurement actor holds a latency predictor to screen with.
    """
    import ray

    key = json.dumps([config, dense[0].hex()], sort_keys=True, default=str)
    if key not in _RUNNERS:
        search = search_config_from_dict(config)
        model, _ = ray.get(dense[0])
        _RUNNERS.clear()
        meter = RemoteMeter(station, predicts, measure_resource(search.profile))
        _RUNNERS[key] = TrialRunner(task=search.trial_task(), config=search, dense=model, meter=meter,
                                    step_guard=_GATE.step)
    runner = _RUNNERS[key]
    runner.meter.station = station  # type: ignore[attr-defined]  # a later search may reuse this process
    return job.run(runner)


def _crash_reason(err: BaseException) -> str | None:
    """Why a task's process died (retryable), or None for an error of the job's own code."""
    from ray.exceptions import RayError, RayTaskError

    if isinstance(err, RayTaskError):
        cause = getattr(err, "cause", None)
        return _crash_reason(cause) if isinstance(cause, RayError) else None
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


class RayExecutor(Executor):
    """Up to ``workers`` jobs at once as Ray tasks with the configured CPUs/GPUs each."""

    def __init__(self, execution: ExecutionConfig, config: SearchConfig, dense: nn.Module, example_input: Inputs, *,
                 predictor: LatencyPredictor | None = None) -> None:
        self.execution = execution
        self.slots = execution.workers
        self._owns_ray = connect_ray(execution, [config.profile], task_modules(config.task))
        import ray

        resource = measure_resource(config.profile)
        if not resource_alive(resource):
            gcs = ray.get_runtime_context().gcs_address
            self.close()
            raise BackendUnavailable(
                f"no live node of the Ray cluster at {gcs} offers `{resource}`, the resource that measures profile "
                f"{config.profile.name!r}; start the measuring node with: ray start --address {gcs} "
                f"--resources '{{\"{resource}\": 1}}'")
        self._config = config.to_dict()
        self._dense = [ray.put((dense, example_input))]  # in a list: passed as a reference, fetched on demand
        station_cls = ray.remote(MeasurementStation)
        self.station = station_cls.options(num_cpus=0, resources={resource: 1}, max_restarts=2,
                                           max_task_retries=2).remote(
            self._config, self._dense, None if predictor is None else predictor.to_dict())
        self._predicts = predictor is not None
        self._task = ray.remote(run_job).options(
            num_cpus=execution.cpus_per_trial, num_gpus=execution.gpus_per_trial, max_retries=0)
        self._jobs: dict[Any, Job] = {}  # object ref -> its job
        self._attempts: dict[int, int] = {}  # id(job) -> attempts so far

    def submit(self, job: Job) -> None:
        self._attempts[id(job)] = 0
        self._launch(job)

    def _launch(self, job: Job) -> None:
        self._attempts[id(job)] += 1
        self._jobs[self._task.remote(self._config, self.station, self._dense, job, self._predicts)] = job

    def wait(self) -> list[Done]:
        import ray

        done: list[Done] = []
        while not done:
            ray.wait(list(self._jobs), num_returns=1)
            ready, _ = ray.wait(list(self._jobs), num_returns=len(self._jobs), timeout=0)
            for ref in ready:
                job = self._jobs.pop(ref)
                finished = self._collect(ref, job)
                if finished is not None:
                    done.append(finished)
        return done

    def _collect(self, ref: Any, job: Job) -> Done | None:
        """The finished job, its ``failed`` result, or None after resubmitting a crashed one."""
        import ray
        from ray.exceptions import RayError

        try:
            result = ray.get(ref)
        except RayError as err:
            crash = _crash_reason(err)
            attempts = self._attempts[id(job)]
            if crash is not None and attempts <= self.execution.max_retries:
                print(f"autoprune: {type(job).__name__} {getattr(job, 'number', '')}: worker died ({crash}); "
                      f"retry {attempts} of {self.execution.max_retries}", file=sys.stderr)
                self._launch(job)
                return None
            reason = (f"worker died {attempts} time(s), last: {crash}" if crash is not None
                      else f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}")
            result = job.failed(reason)
        del self._attempts[id(job)]
        return Done(job=job, result=result)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for ref in list(getattr(self, "_jobs", ())):
            ray.cancel(ref, force=True)
        if hasattr(self, "station"):
            ray.kill(self.station)
        if self._owns_ray:
            ray.shutdown()
