"""TVM backend: torch.export -> Relax -> ``tvm.compile`` -> VirtualMachine, locally or over RPC.

TVM 0.27's default llvm pipeline applies no schedule to convolutions (35-80x slower than ONNX
Runtime here), so a profile with ``tuning_trials > 0`` tunes every fused TIR task with
MetaSchedule into a persistent JSON database (``tuning_db``) shared by all candidates: a layer
shape tuned once (the dense model's, or another candidate's) is never tuned again, only new
shapes are. Every measurement records ``tuned`` and how many tasks were tuned/reused.

MetaSchedule needs ``apache-tvm-ffi`` 0.1.14.x: 0.1.15.post2 segfaults in ``tvm.ir.save_json``
(``ToJSONGraph``) on any TIR node, which every database write calls (constraints.txt pins it).
Its stock LocalBuilder/LocalRunner start a fresh subprocess per batch that re-imports TVM
(8 s idle, minutes on a loaded 2-core machine; the default 30 s timeout failed every build),
so candidates are built and timed in this process instead (:func:`_in_process_builder_runner`).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import BackendUnavailable, ConfigError
from autoprune.hardware.base import LatencyBackend, Prepared
from autoprune.validation import check_int, check_number, require

if TYPE_CHECKING:
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs

INSTALL_HINT = "pip install 'autoprune[tvm]' (apache-tvm, apache-tvm-ffi 0.1.14, xgboost-cpu, tornado, psutil)"
#: where tuning records go when the profile sets no ``tuning_db`` (env override)
TUNING_DB_ENV = "AUTOPRUNE_TVM_TUNING_DB"
#: environment variables that override a profile file's ``rpc.host`` / ``rpc.port`` (a board's address
#: changes per lab; the profile stays in git)
RPC_HOST_ENV = "AUTOPRUNE_RPC_HOST"
RPC_PORT_ENV = "AUTOPRUNE_RPC_PORT"


@dataclass(frozen=True, kw_only=True)
class RpcConfig:
    """Where a remote board's TVM RPC server (or tracker) listens."""

    host: str
    port: int
    key: str | None = None
    use_tracker: bool = False
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        require(isinstance(self.host, str) and bool(self.host), f"`rpc.host` must be a host name, got {self.host!r}")
        check_int("rpc.port", self.port, 1)
        check_number("rpc.timeout_s", self.timeout_s, 0.1)


@dataclass(frozen=True, kw_only=True)
class TvmOptions:
    """The ``tvm:`` section of a hardware profile: what to compile for, how to tune, where the board is.

    Attributes:
        target: a TVM target dict (``{kind: llvm, mtriple: ..., num-cores: ...}``); the host's llvm by default.
        tuning_trials: MetaSchedule trials per new fused-layer task (0: TVM's unscheduled default pipeline).
        tuning_db: folder of the tuning records (default: results/.cache/tvm-tuning/<profile>).
        cross_compiler: a compiler command that links a ``.so`` for a foreign target (else a ``.tar``).
        rpc: the board's RPC server; None measures on this machine.
    """

    target: Mapping[str, Any] = field(default_factory=lambda: {"kind": "llvm"})
    tuning_trials: int = 0
    tuning_db: str | None = None
    cross_compiler: str | None = None
    rpc: RpcConfig | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.target, Mapping) and isinstance(self.target.get("kind"), str),
                f"`target` must be a mapping with a `kind` (e.g. {{kind: llvm}}), got {self.target!r}")
        for key, value in self.target.items():
            require(isinstance(key, str) and isinstance(value, (str, int, bool, list, tuple)),
                    f"`target.{key}` must be a string, number, boolean or list, got {value!r}")
        check_int("tuning_trials", self.tuning_trials, 0)
        if self.tuning_db is not None:
            require(isinstance(self.tuning_db, str) and bool(self.tuning_db),
                    f"`tuning_db` must be a folder path, got {self.tuning_db!r}")
        if self.cross_compiler is not None:
            require(isinstance(self.cross_compiler, str) and bool(self.cross_compiler),
                    f"`cross_compiler` must be a compiler command (e.g. aarch64-linux-gnu-g++), "
                    f"got {self.cross_compiler!r}")
        if isinstance(self.rpc, Mapping):  # from a profile file or a recorded profile
            from autoprune.config import build

            object.__setattr__(self, "rpc", build(RpcConfig, self.rpc, "rpc"))


def tvm_options(profile: HardwareProfile) -> TvmOptions:
    """The profile's ``tvm:`` section (the defaults when it has none)."""
    return profile.options or TvmOptions()


def _tvm():
    try:
        import tvm
        from tvm import relax  # noqa: F401 - fails on builds without Relax
    except ImportError:
        raise BackendUnavailable(f"apache-tvm is not installed: {INSTALL_HINT}") from None
    return tvm


def make_target(profile: HardwareProfile):
    """The profile's target as a ``tvm.target.Target``; ConfigError naming the offending field."""
    tvm = _tvm()
    spec = dict(tvm_options(profile).target)
    if _is_host(spec):
        spec.setdefault("num-cores", profile.threads)
        # without `mcpu` LLVM emits baseline x86-64 (SSE2): tuned kernels would lose AVX2/AVX-512
        spec.setdefault("mcpu", tvm.target.codegen.llvm_get_system_cpu())
    try:
        return tvm.target.Target({k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()})
    except Exception as err:  # noqa: BLE001 - TVM raises ValueError/TVMError for a bad target
        import re

        message = str(err).splitlines()[0].split(" Target creation from config dict failed")[0]
        option = re.search(r"[Oo]ption '([^']+)'", message)
        field = f"target.{option.group(1)}" if option else "target.kind" if "Target kind" in message else "target"
        raise ConfigError(f"hardware profile {profile.name}: `{field}` is not a valid TVM target: {message}") from None


def _is_host(spec: dict[str, Any]) -> bool:
    """Whether a target dict compiles for this machine (llvm without a foreign ``mtriple``)."""
    if spec.get("kind") != "llvm":
        return False
    triple = spec.get("mtriple")
    if triple is None:
        return True
    import platform

    return str(triple).split("-")[0] == platform.machine()


def tuning_db_path(profile: HardwareProfile, target) -> Path:
    """The folder of the MetaSchedule database for ``target`` (shared by every candidate and run).

    One sub-folder per exact target string: MetaSchedule looks records up by workload alone, so
    schedules tuned for another CPU (or `mcpu`, or thread count) would otherwise be applied here.
    """
    import hashlib

    if tvm_options(profile).tuning_db:
        root = Path(tvm_options(profile).tuning_db)
    else:
        root = Path(os.environ.get(TUNING_DB_ENV, "results/.cache/tvm-tuning")) / profile.name
    return root / f"{target.kind.name}-{hashlib.sha256(str(target).encode()).hexdigest()[:12]}"


def _relax_module(model: nn.Module, x: Inputs, *, dynamic_batch: bool = False):
    """``model`` as a Relax module (BatchNorm folded into convolutions), its shapes fixed to ``x``'s.

    With ``dynamic_batch`` the first axis of every input (and so of the outputs) is one symbolic
    variable >= 1 instead (torch's ``Dim("batch")``, a TIR variable in Relax): one library then
    serves any batch size. ``torch.export`` specialises a size-1 dimension to the constant 1, so a
    batch-1 example is traced as a batch-2 copy; a model whose code fixes the batch
    (``x.view(1, 4)``, a branch on ``x.shape[0]``) fails here with a RuntimeError (a shape error,
    or torch's "Constraints violated (batch)").
    """
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from autoprune.inputs import PositionalModule, batch_size, named_tensors, repeat_batch

    dynamic_shapes = None
    if dynamic_batch:
        if batch_size(x) == 1:
            x = repeat_batch(x, 2)
        batch = torch.export.Dim("batch", min=1)
        # PositionalModule.forward(*tensors): torch.export sees one argument, the tuple of tensors
        dynamic_shapes = (tuple({0: batch} for _ in named_tensors(x)),)
    with torch.no_grad():  # by position, plain tensors out: keyword inputs and ModelOutput become arguments/tuples
        exported = torch.export.export(PositionalModule(model.eval(), x).eval(), tuple(t for _, t in named_tensors(x)),
                                       dynamic_shapes=dynamic_shapes)
    # weights become constants of the module, so the compiled library is self-contained (RPC);
    # BatchNorm folded into the convolution's weights and bias, so conv+bias+activation(+residual)
    # fuse into one task instead of a conv task plus a separate normalisation pass
    mod = from_exported_program(exported, unwrap_unit_return_tuple=True)
    return relax.transform.FoldBatchnormToConv2D()(mod)


def _fused(mod, target):
    """The module after legalization and fusion: its TIR functions are the tuning tasks.

    The same passes, in the same order, as ``compile_relax`` runs before applying the
    database, so the tasks tuned here are the ones it looks up.
    """
    import tvm
    from tvm import relax

    try:
        dispatch = relax.pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    passes = [*dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _tune(mod, target, profile: HardwareProfile, *, more_trials: int = 0) -> dict[str, Any]:
    """Tune the tasks of ``mod`` that the database has no record for; return tuning facts.

    With ``more_trials``, every task is searched that many trials further instead (MetaSchedule
    seeds its search with the database's best schedules and keeps whichever is faster).
    """
    from tvm.s_tir import meta_schedule as ms

    folder = tuning_db_path(profile, target)
    folder.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(work_dir=str(folder))
    tasks = ms.relax_integration.extract_tasks(_fused(mod, target), target)
    to_tune = tasks if more_trials else [
        t for t in tasks if database.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    start = time.perf_counter()
    if to_tune:
        # a further search gets a fresh seed, or it would first re-propose the schedules measured before
        seed = len(database) if more_trials else 0
        _search(to_tune, database, profile, more_trials or tvm_options(profile).tuning_trials, seed=seed)
    return {"database": database, "tasks": len(tasks), "tasks_tuned": len(to_tune),
            "tasks_reused": len(tasks) - len(to_tune), "tuning_s": time.perf_counter() - start}


def _search(tasks: list, database, profile: HardwareProfile, trials: int, seed: int) -> None:
    """Run MetaSchedule on ``tasks`` for ``trials`` trials each, recording into ``database``."""
    from tvm.s_tir import meta_schedule as ms

    _check_tuning_works()
    builder, runner = _rpc_builder_runner(profile) if tvm_options(profile).rpc else _in_process_builder_runner()
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(logging.WARNING)  # its INFO tables per trial batch would flood the console
    # MetaSchedule's logging set-up names its logger's handlers and fails on an unnamed one (an
    # application's own, pytest's capture handlers): set those aside while it runs
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        with tempfile.TemporaryDirectory() as logs:  # MetaSchedule's per-task logs: not kept
            # a 256-schedule population (default 512) halves the search's own time per trial batch
            strategy = ms.search_strategy.EvolutionarySearch(population_size=256)
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=tasks, work_dir=logs, space="post-order-apply", strategy=strategy, seed=seed)
            total = trials * len(tasks)
            ms.tune.tune_tasks(
                tasks=contexts, task_weights=weights, work_dir=logs, max_trials_global=total,
                max_trials_per_task=trials, num_trials_per_iter=min(trials, 32), database=database,
                builder=builder, runner=runner, cost_model=_cost_model(total))
    finally:
        logger.setLevel(level)
        for handler in unnamed:
            logger.addHandler(handler)


def tune_further(model: nn.Module, example_input: Inputs, profile: HardwareProfile, trials: int) -> dict[str, Any]:
    """Search every tuning task of ``model`` ``trials`` trials beyond what the profile's database
    holds (for models whose schedules the first ``tuning_trials`` left far from the runtime's best).

    Returns:
        The tuning facts (``tasks``, ``tasks_tuned``, ``tuning_s``); later measurements use the result.
    """
    facts = _tune(_relax_module(model, example_input), make_target(profile), profile, more_trials=trials)
    facts.pop("database")
    return facts


#: measured schedules MetaSchedule's XGBoost model needs before it predicts (random until then)
XGB_WARMUP_SAMPLES = 100


def _cost_model(total_trials: int):
    """MetaSchedule's XGBoost cost model (guides the search to fast schedules) when the run is long
    enough for it to predict, else random sampling: below its warm-up samples the XGBoost model
    predicts at random anyway, and only adds its training time. Random, with a warning, when
    xgboost is not installed (the ``tvm`` extra installs it)."""
    from tvm.s_tir import meta_schedule as ms

    if total_trials <= XGB_WARMUP_SAMPLES:
        return ms.CostModel.create("random")
    try:
        import xgboost  # noqa: F401
    except ImportError:
        logging.getLogger(__name__).warning("xgboost is not installed: MetaSchedule samples schedules at random "
                                            "(slower to find fast ones); %s", INSTALL_HINT)
        return ms.CostModel.create("random")
    return ms.CostModel.create("xgb", num_warmup_samples=XGB_WARMUP_SAMPLES)


#: apache-tvm-ffi releases whose ``save_json`` segfaults on TIR (every tuning record write)
BROKEN_FFI = ("0.1.15",)


def _check_tuning_works() -> None:
    """BackendUnavailable instead of a segfault when the installed apache-tvm-ffi cannot tune."""
    import importlib.metadata

    version = importlib.metadata.version("apache-tvm-ffi")
    if version.startswith(BROKEN_FFI):
        raise BackendUnavailable(f"MetaSchedule tuning crashes with apache-tvm-ffi {version} (save_json segfault): "
                                 "pip install apache-tvm-ffi==0.1.14.post1, or set `tuning_trials: 0`")


def _evaluator_config():
    """How every tuning candidate is timed: 3 runs of at least 20 ms in all, one repeat."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig

    return EvaluatorConfig._normalized(EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20))


def _builder(export):
    """A MetaSchedule builder that builds candidates in this process; ``export(built)`` writes one
    and returns its path. A candidate that fails to build or export is an error result."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    results.append(BuilderResult(str(export(default_build(item.mod, item.target, None))), None))
                except Exception as err:  # noqa: BLE001 - a failed candidate schedule is a tuning result
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"))
            return results

    return InProcessBuilder()


def _in_process_builder_runner():
    """A MetaSchedule builder and runner that build and time candidates in this process."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export
    from tvm.s_tir.meta_schedule.runner import PyRunner, local_runner

    @derived_object
    class InProcessRunner(PyRunner):
        def __init__(self) -> None:
            super().__init__()
            self.config = _evaluator_config()

        def run(self, runner_inputs):
            futures = []
            for item in runner_inputs:
                try:
                    costs = local_runner._worker_func(None, None, None, self.config, 1, str(item.artifact_path),
                                                      str(item.device_type),
                                                      tuple(a.as_json() for a in item.args_info))
                    futures.append(local_runner.LocalRunnerFuture(res=costs))
                except Exception as err:  # noqa: BLE001 - a failed candidate run is a tuning result
                    futures.append(local_runner.LocalRunnerFuture(error_message=f"{type(err).__name__}: {err}"))
            return futures

    return _builder(default_export), InProcessRunner()


def _rpc_builder_runner(profile: HardwareProfile):
    """A MetaSchedule builder and runner that build candidates here and time them on the board.

    Raises BackendUnavailable, naming host:port, when the board is unreachable, before anything
    is built. See :func:`_cross_builder` and :func:`_board_runner`.
    """
    connect_rpc(profile)  # fail fast; this probe session closes at once
    # imported by MetaSchedule's CPU schedule rules when the tune contexts are made (after this)
    _import_on_a_bare_stack("tvm.s_tir.tensor_intrin")
    return _cross_builder(profile), _board_runner(profile)


def _cross_builder(profile: HardwareProfile):
    """Builds candidates in this process for the profile's target, exported like the model itself.

    :func:`_export`: ``.so`` for the host or with ``cross_compiler``, otherwise a ``.tar`` of
    objects that the board's RPC server links.
    """
    import shutil

    def export(built) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="autoprune-ms-"))  # removed by MetaSchedule once run
        try:
            return _export(built, profile, folder / "candidate")
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    return _builder(export)


def _board_runner(profile: HardwareProfile):
    """Times candidates on the profile's board over TVM RPC, in this process (no Popen workers).

    One RPC session per batch of candidates (one ``run`` call), closed at the end of the batch:
    TVM's RPC server serves one session at a time, so a session left open would block the
    measurement's own connection. Each candidate goes through MetaSchedule's own RPCRunner steps
    (upload + load, random arguments on the remote device, ``time_evaluator``). A session that
    drops is reopened and the candidate tried once more (BackendUnavailable if the board is gone);
    any other failure of a candidate becomes its error result.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, rpc_runner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
    from tvm_ffi.error import register_error

    # a board lost mid-tuning (the reconnect in `run` fails) reaches the caller as BackendUnavailable
    # through MetaSchedule's C++ task scheduler, not as a RuntimeError
    register_error("autoprune.BackendUnavailable", BackendUnavailable)
    board = tvm_options(profile).rpc
    where = f"{board.host}:{board.port}"

    @derived_object
    class BoardRunner(PyRunner):
        def __init__(self) -> None:
            super().__init__()
            self.config = _evaluator_config()
            self.uploads = 0  # candidates sent so far (unique remote file names)

        def run(self, runner_inputs):
            if not runner_inputs:  # MetaSchedule also asks with empty batches: no session for those
                return []
            session = connect_rpc(profile)
            futures = []
            for item in runner_inputs:
                for attempt in (1, 2):
                    try:
                        futures.append(LocalRunnerFuture(res=self._time(session, item)))
                        break
                    except Exception as err:  # noqa: BLE001 - a failed candidate run is a tuning result
                        if attempt == 1 and not _rpc_alive(session):
                            session = connect_rpc(profile)  # the session dropped: reconnect, try again
                            continue
                        futures.append(LocalRunnerFuture(error_message=f"on {where}: {type(err).__name__}: {err}"))
                        break
            del session  # closes the connection: the server can take the next client
            return futures

        def _time(self, session, item) -> list[float]:
            self.uploads += 1
            local = str(item.artifact_path)
            remote = f"autoprune-candidate-{self.uploads}{Path(local).suffix}"
            try:
                module = rpc_runner.default_upload_module(session, local, remote)
                device = session.device(str(item.device_type), 0)
                args = rpc_runner.default_alloc_argument(session, device, tuple(a.as_json() for a in item.args_info), 1)
                return rpc_runner.default_run_evaluator(session, module, device, self.config, args)
            finally:
                # not rpc_runner.default_cleanup: its remove("") deletes the session's whole workspace
                # (fine for its one session per candidate, fatal for the next upload in this one)
                for name in (remote, remote + ".so"):  # + the library the server linked from a .tar
                    try:
                        session.remove(name)
                    except Exception:  # noqa: BLE001 - already gone, or the session dropped
                        pass

    return BoardRunner()


def _import_on_a_bare_stack(name: str) -> None:
    """Import ``name`` in a short-lived thread, so whatever stack it captures holds none of ours.

    ``tvm.s_tir.tensor_intrin`` (imported when the first tune context is made) defines TVMScript
    functions whose decorator keeps ``inspect.stack()`` in a reference cycle: imported during a
    measurement, it keeps every caller's frame, so the prepared model and its RPC session, alive
    until Python's cyclic collector runs. TVM's RPC server serves one session at a time, so the
    next connection to the board would wait forever.
    """
    import importlib
    import sys
    import threading

    if name not in sys.modules:
        thread = threading.Thread(target=importlib.import_module, args=(name,), name=f"import {name}")
        thread.start()
        thread.join()


def _rpc_alive(session) -> bool:
    """Whether an RPC session still answers (a cheap remote call)."""
    try:
        session.get_function("tvm.rpc.server.workpath")("")
        return True
    except Exception:  # noqa: BLE001 - any failure means the session is gone
        return False


def compile_model(model: nn.Module, example_input: Inputs, profile: HardwareProfile, *,
                  dynamic_batch: bool = False):
    """Compile ``model`` at ``example_input``'s shape for the profile's target.

    Args:
        dynamic_batch: a symbolic batch axis (:func:`_relax_module`), for export only. Always built
            with TVM's default schedules: MetaSchedule tunes and looks records up per static
            workload, so a profile's ``tuning_trials`` apply to the static build alone (what the
            search times).

    Returns:
        (executable, info) where info holds ``tuned`` and, when tuned, the tuning facts.
    """
    tvm = _tvm()
    target = make_target(profile)
    mod = _relax_module(model, example_input, dynamic_batch=dynamic_batch)
    start = time.perf_counter()
    if tvm_options(profile).tuning_trials > 0 and not dynamic_batch:
        from tvm.s_tir import meta_schedule as ms

        facts = _tune(mod, target, profile)
        executable = ms.relax_integration.compile_relax(facts.pop("database"), mod, target, params=None)
        info: dict[str, Any] = {"tuned": True, **facts}
    else:
        executable = tvm.compile(mod, target=target)
        info = {"tuned": False}
    info["compile_s"] = time.perf_counter() - start
    return executable, info


def _library_suffix(profile: HardwareProfile) -> str:
    options = tvm_options(profile)
    return ".so" if _is_host(dict(options.target)) or options.cross_compiler else ".tar"


def _export(executable, profile: HardwareProfile, path: Path) -> Path:
    """Write the compiled library: ``.so`` for the host or with a cross compiler, else ``.tar``."""
    path = path.with_suffix(_library_suffix(profile))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    compiler = tvm_options(profile).cross_compiler
    if path.suffix == ".so" and compiler:
        from tvm.support import cc

        executable.export_library(str(partial), fcompile=cc.cross_compiler(compiler))
    else:
        executable.export_library(str(partial))
    partial.replace(path)
    return path


def export_tvm_library(model: nn.Module, example_input: Inputs, profile: HardwareProfile,
                       path: str | Path, *, dynamic_batch: bool = False) -> Path:
    """Compile ``model`` for the profile's target and write it.

    The suffix of ``path`` is replaced: ``.so`` for the host target or when the profile names a
    ``cross_compiler``, ``.tar`` (objects, linked on the device) otherwise.

    Args:
        dynamic_batch: the library's ``main`` takes any batch size (a symbolic first axis), built with
            TVM's default schedules; otherwise it is fixed to ``example_input``'s batch and tuned when
            the profile says so (see :func:`compile_model`).

    Returns:
        The written file.
    """
    executable, _ = compile_model(model, example_input, profile, dynamic_batch=dynamic_batch)
    return _export(executable, profile, Path(path))


class TvmPrepared(Prepared):
    """A VirtualMachine on a (local or remote) device, timed by TVM's own ``time_evaluator``."""

    def __init__(self, vm, device, args: list, info: dict[str, Any], keep: tuple = ()) -> None:
        self._vm, self._device, self._args = vm, device, args
        self.info = info
        self._keep = keep  # the RPC session and temp folder must outlive the VM

    def run(self, n: int) -> list[float]:
        evaluator = self._vm.time_evaluator("main", self._device, number=1, repeat=n)
        return [float(s) for s in evaluator(*self._args).results]


def connect_rpc(profile: HardwareProfile):
    """An RPC session to the profile's board (direct or via tracker), or BackendUnavailable."""
    from tvm import rpc

    cfg = tvm_options(profile).rpc
    assert cfg is not None
    kind = "tracker" if cfg.use_tracker else "server"
    where = f"hardware profile {profile.name}: TVM RPC {kind} at {cfg.host}:{cfg.port}"
    try:  # TVM's own connect retries for a long time: probe with a bounded timeout first
        socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout_s).close()
    except OSError as err:
        raise BackendUnavailable(f"{where} is unreachable within {cfg.timeout_s:g} s: {err}") from None
    try:
        if cfg.use_tracker:
            return rpc.connect_tracker(cfg.host, cfg.port).request(cfg.key or "", session_timeout=0,
                                                                    max_retry=1)
        return rpc.connect(cfg.host, cfg.port, key=cfg.key or "")
    except Exception as err:  # noqa: BLE001 - RPC failures are environment errors
        raise BackendUnavailable(f"{where}: {str(err).splitlines()[0]}") from None


class TvmBackend(LatencyBackend):
    """Compiles with TVM for the profile's target; runs locally or on an RPC board."""

    Options = TvmOptions

    def __init__(self, profile: HardwareProfile) -> None:
        super().__init__(profile)
        _tvm()
        options = tvm_options(profile)
        target = make_target(profile)  # a bad target fails here, before any model is compiled
        if options.rpc is None and not _is_host(dict(options.target)):
            raise ConfigError(f"hardware profile {profile.name}: `tvm.target` {dict(options.target)} is not this "
                              "machine; add `tvm.rpc` (host/port of the board's TVM RPC server) to run it")
        if options.tuning_trials > 0 and target.kind.name == "llvm" and "num-cores" not in target.export():
            # MetaSchedule's CPU rules need the core count; the host's is filled in from `threads`
            raise ConfigError(f"hardware profile {profile.name}: tuning for target {dict(options.target)} needs "
                              "`tvm.target.num-cores` (the board's cores, e.g. the profile's `threads`)")

    @classmethod
    def user_options(cls, section: Mapping[str, Any], source: str) -> dict[str, Any]:
        """The section with ``rpc.host`` / ``rpc.port`` taken from the environment when set."""
        merged = dict(section)
        if not isinstance(merged.get("rpc"), Mapping):
            return merged
        rpc = dict(merged["rpc"])
        if os.environ.get(RPC_HOST_ENV):
            rpc["host"] = os.environ[RPC_HOST_ENV]
        if os.environ.get(RPC_PORT_ENV):
            try:
                rpc["port"] = int(os.environ[RPC_PORT_ENV])
            except ValueError:
                raise ConfigError(f"{source}: {RPC_PORT_ENV} must be a port number, "
                                  f"got {os.environ[RPC_PORT_ENV]!r}") from None
        return {**merged, "rpc": rpc}

    def prepare(self, model: nn.Module, example_input: Inputs) -> Prepared:
        tvm = _tvm()
        from tvm import relax

        from autoprune.inputs import named_tensors

        x = self.batch_input(example_input)
        executable, info = compile_model(model, x, self.profile)
        folder = tempfile.TemporaryDirectory(prefix="autoprune-tvm-")
        library = _export(executable, self.profile, Path(folder.name) / "model")
        info["model_bytes"] = library.stat().st_size
        rpc = tvm_options(self.profile).rpc
        if rpc is None:
            device, session = tvm.cpu(), None
            _set_threads(tvm.get_global_func("runtime.config_threadpool"), self.profile.threads)
            loaded = tvm.runtime.load_module(str(library))
        else:
            session = connect_rpc(self.profile)
            session.upload(str(library))
            loaded = session.load_module(library.name)
            device = session.cpu()
            _set_threads(session.get_function("runtime.config_threadpool"), self.profile.threads)
            info["rpc"] = f"{rpc.host}:{rpc.port}"
            info["session_memory_bytes"] = None  # the board's memory is not visible from here
        vm = relax.VirtualMachine(loaded, device)
        args = [tvm.runtime.tensor(t.numpy(), device) for _, t in named_tensors(x)]
        return TvmPrepared(vm, device, args, info, keep=(session, folder, loaded))

    def load_gauge(self):
        """This machine's gauge, or None over RPC (the board's load is not visible from here)."""
        return None if tvm_options(self.profile).rpc else super().load_gauge()

    def versions(self) -> dict[str, str]:
        import importlib.metadata

        versions = {**super().versions(), "tvm": _tvm().__version__}
        try:
            versions["apache-tvm-ffi"] = importlib.metadata.version("apache-tvm-ffi")
        except importlib.metadata.PackageNotFoundError:
            pass
        return versions


def _set_threads(config_threadpool, threads: int) -> None:
    """Fix the TVM runtime's worker threads (mode 1 = big cores) to the profile's count."""
    config_threadpool(1, threads)
