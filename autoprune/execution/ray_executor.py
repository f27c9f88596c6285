"""Jobs on Ray: every job a Ray task on a worker, latency on one dedicated measurement actor per device.

Placement. Every job (``execution/jobs.py``) runs as a Ray task on a worker, which rebuilds the
search's runner from plain data (cached per process). A worker never measures latency: it
prunes, then hands the pruned candidate to the *measurement actor* of the search's hardware
profile, which holds the dense model prepared and measures candidate and dense interleaved (the
dense reference is measured there too). With a latency predictor the actor holds it as well and
predicts for the workers: layer shapes missing from its table are timed on the measured device,
never on a worker. The actor needs the custom resource ``autoprune_measure_<profile>: 1``,
declared on exactly one node per measured device, so one device measures one model at a time. A
local Ray started by autoprune declares it itself; on a cluster start the measuring node with
``ray start ... --resources '{"autoprune_measure_<profile>": 1}'``. Results, fine-tuned weights
included, come back through the object store: workers write nothing to the run folder.

Faults. A job whose worker process dies (SIGKILL, out of memory, node lost) is resubmitted up
to ``max_retries`` times, then ends as ``job.failed(reason)`` (for a trial: a FAILED record). An
error raised by the job's own code is not retried (it would fail again); it ends that way at once.

Security. A local Ray binds 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the
environment before Ray is imported, plus the node address) and starts no dashboard.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
from typing import TYPE_CHECKING, Any

from autoprune.config import ExecutionConfig, SearchConfig, search_config_from_dict
from autoprune.errors import BackendUnavailable
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


def measure_resource(profile_name: str) -> str:
    """The Ray custom resource that marks the node measuring ``profile_name``."""
    return "autoprune_measure_" + re.sub(r"[^A-Za-z0-9_]", "_", profile_name)


def _import_ray_on_loopback():
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case ray was imported before the variable was set
    return ray


def start_local_ray(*, num_cpus: int | None = None, num_gpus: int | None = None,
                    measure_profiles: tuple[str, ...] | list[str] = ()) -> None:
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


def connect_ray(execution: ExecutionConfig, measure_profiles: tuple[str, ...] | list[str]) -> bool:
    """Join ``execution.address``, the job's cluster, or start a local Ray. True when this call connected.

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
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError) as err:
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

    def dense(self) -> LatencyStats:
        return self.meter.dense()

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        return self.meter.compare(candidate)

    def predict(self, candidate: nn.Module) -> float | None:
        return self.meter.predict(candidate)

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        return self.meter.compare_onnx(onnx, fp32)

    def dense_median_ms(self) -> float:
        return self.meter.dense_median_ms()

    def pid(self) -> int:
        return os.getpid()


class RemoteMeter:
    """Stands in for a LatencyMeter inside a worker: every measurement and prediction goes to the measurement actor.

    ``predicts`` says whether the actor holds a predictor, so a search without one makes no
    prediction round trip (it would queue behind the actor's measurements).
    """

    def __init__(self, station: Any, predicts: bool) -> None:
        self.station = station
        self.predicts = predicts
        self._dense_median_ms: float | None = None

    def dense(self) -> LatencyStats:
        import ray

        stats: LatencyStats = ray.get(self.station.dense.remote())
        return stats

    def compare(self, candidate: nn.Module) -> tuple[LatencyStats, LatencyStats]:
        import ray

        pair: tuple[LatencyStats, LatencyStats] = ray.get(self.station.compare.remote(candidate))
        return pair

    def compare_onnx(self, onnx: bytes, fp32: nn.Module | None) -> tuple[LatencyStats, ...]:
        import ray

        measured: tuple[LatencyStats, ...] = ray.get(self.station.compare_onnx.remote(onnx, fp32))
        return measured

    def predict(self, candidate: nn.Module) -> float | None:
        import ray

        return ray.get(self.station.predict.remote(candidate)) if self.predicts else None

    def dense_median_ms(self) -> float:
        """The actor's dense median, fetched once per worker (the actor keeps one value per run too)."""
        import ray

        if self._dense_median_ms is None:
            self._dense_median_ms = float(ray.get(self.station.dense_median_ms.remote()))
        return self._dense_median_ms


_RUNNERS: dict[str, TrialRunner] = {}  # per worker process: the rebuilt runner of the search it serves


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
        _RUNNERS[key] = TrialRunner(task=search.trial_task(), config=search, dense=model, meter=RemoteMeter(station,
                                                                                                            predicts))
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
        self._owns_ray = connect_ray(execution, [config.profile.name])
        import ray

        resource = measure_resource(config.profile.name)
        if resource not in ray.cluster_resources():
            self.close()
            raise BackendUnavailable(
                f"the Ray cluster has no `{resource}` resource to measure profile {config.profile.name!r} on; start "
                f"the measuring node with: ray start ... --resources '{{\"{resource}\": 1}}'")
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
