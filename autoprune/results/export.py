"""Verified export of one trial: ONNX, PyTorch (plan + state_dict) or a TVM library, plus a model card.

The trial's candidate is rebuilt exactly as the runner built it (the task's dense model, the
plan applied with the run's pruner settings, the saved state_dict loaded), checked against
its record (MACs, params, accuracy), exported into a temporary folder, *reloaded from there*
and run on validation inputs; only when its outputs match the PyTorch model within the
format's tolerance is latency re-measured, the model card written and the folder renamed to
``--out``. A failed check raises :class:`ExportError` and leaves nothing behind.

Call order of an :class:`Exporter`: ``check(profile)`` before any work, ``write(...)`` the
files, ``load(folder)`` a predictor from them alone (what a user's deployment does).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import AutopruneError, BackendUnavailable, ConfigError, PlanError
from autoprune.files import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text, umask_mode
from autoprune.plan import PrunerSettings, PruningPlan
from autoprune.pruning.saving import rebuild
from autoprune.records import TrialState
from autoprune.registry import EXPORTERS

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from autoprune.config import HardwareProfile
    from autoprune.inputs import Inputs
    from autoprune.task import Task, TaskSpec

MANIFEST = "export.json"
#: one input batch as numpy arrays, shaped like the task's example input (an array, a tuple or a dict of arrays)
NumpyInputs = Any
Predictor = Callable[[NumpyInputs], "np.ndarray"]


class ExportError(AutopruneError):
    """The exported model does not reproduce the pruned PyTorch model (nothing was written)."""


@dataclass(frozen=True, kw_only=True)
class Rebuild:
    """What rebuilds a trial's architecture from the task's dense model: the task, the plan and the pruner settings
    (``rebuild.json`` of a torch export, ``rebuild`` in a model card)."""

    task: str
    plan: dict[str, dict[str, Any]]
    settings: PrunerSettings
    #: the task's ``data``/``weights``/``input_size`` when set (``TaskSpec.options``)
    task_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"task": self.task, "plan": self.plan, "settings": self.settings.to_dict()}
        return {**data, "task_options": dict(self.task_options)} if self.task_options else data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rebuild:
        return cls(task=data["task"], plan=data["plan"], settings=PrunerSettings.from_dict(data["settings"]),
                   task_options=dict(data.get("task_options") or {}))

    def task_spec(self) -> TaskSpec:
        from autoprune.task import TaskSpec

        return TaskSpec(name=self.task, **self.task_options)

    def model(self, task: Task, weights: Path) -> nn.Module:
        """The pruned model with the saved weights (tensors only: ``weights_only=True``)."""
        import torch

        state = torch.load(weights, weights_only=True)
        return rebuild(task, PruningPlan.from_dict(self.plan), self.settings, state).model


class Exporter(ABC):
    """Writes one deployable format and loads it back without autoprune's search state."""

    #: (rtol, atol) the reloaded model's outputs must meet against the PyTorch model
    tolerance: tuple[float, float] = (1e-4, 1e-5)
    #: the format's batch size is open (verified at batch 1 and 8); with ``batch_option`` only when ``dynamic_batch``
    batch_axis: bool = False
    #: the format fixes the batch size or leaves it open by choice (``--static-batch``)
    batch_option: bool = False
    #: leave the batch size open (set by ``export_trial``; only where ``batch_axis``)
    dynamic_batch: bool = False

    def check(self, profile: HardwareProfile) -> None:  # noqa: B027 - optional hook; default accepts every profile
        """Raise a user error when this format cannot be produced for ``profile``."""

    def note(self, profile: HardwareProfile) -> str | None:
        """What the model card must say about how this export was built when it differs from the model the
        search timed (None: nothing); called after ``write``."""
        return None

    @abstractmethod
    def write(self, model: nn.Module, example_input: Inputs, profile: HardwareProfile, recipe: Rebuild,
              folder: Path) -> list[Path]:
        """Write the model's files into ``folder``; return them."""

    @abstractmethod
    def load(self, folder: Path) -> Predictor:
        """A function from one input batch (numpy: an array, a tuple or a dict of arrays, as the task's example
        input) to the model's (primary) output (numpy), from ``folder`` alone."""


class OnnxExporter(Exporter):
    """``model.onnx`` (weights embedded), checked with ONNX Runtime's CPU provider; a dynamic batch axis
    unless ``--static-batch`` (users serve batches)."""

    batch_axis = True
    batch_option = True

    def write(self, model, example_input, profile, recipe, folder):
        from autoprune.hardware.onnxruntime_backend import export_onnx_bytes

        data = export_onnx_bytes(model, example_input, dynamic_batch=self.dynamic_batch)
        return [atomic_write_bytes(folder / "model.onnx", data)]

    def load(self, folder):
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}  # inputs the exporter folded away are not fed
        return lambda x: session.run(None, {k: v for k, v in _named_arrays(x) if k in wanted})[0]


class TorchExporter(Exporter):
    """``rebuild.json`` (task, plan, pruner settings) + ``state_dict.pt`` (tensors only, loaded with
    ``weights_only=True``): no pickled module, so it loads with any torch that can rebuild the task."""

    tolerance = (0.0, 0.0)  # the same weights in the same architecture: bit-identical
    batch_axis = True  # a PyTorch module takes any batch

    def write(self, model, example_input, profile, recipe, folder):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return [atomic_write_json(folder / "rebuild.json", recipe.to_dict()),
                atomic_torch_save(state, folder / "state_dict.pt")]

    def load(self, folder):
        import torch

        from autoprune.inputs import call, primary_output

        model = load_torch_export(folder)

        def predict(x):

            with torch.no_grad():
                return primary_output(call(model, _to_torch(x))).numpy()

        return predict


def load_torch_export(folder: str | Path) -> nn.Module:
    """Rebuild a ``--format torch`` export: the task's dense model, pruned by the plan, with the saved weights."""
    from autoprune.task import resolve_task

    folder = Path(folder)
    recipe = Rebuild.from_dict(json.loads((folder / "rebuild.json").read_text()))
    return recipe.model(resolve_task(recipe.task_spec()), folder / "state_dict.pt")


def _tvm_exporter():
    try:
        from autoprune.hardware import tvm_backend
    except ImportError as err:
        raise BackendUnavailable(f"--format tvm: apache-tvm is not usable ({err}); "
                                 "pip install 'autoprune[tvm]'") from None
    function = getattr(tvm_backend, "export_tvm_library", None)
    if function is None:
        raise BackendUnavailable("--format tvm: this autoprune has no TVM library export "
                                 "(autoprune.hardware.tvm_backend.export_tvm_library)")
    return function


class TvmExporter(Exporter):
    """The compiled library for the profile's TVM target, loaded with TVM's Relax VirtualMachine.

    By default its ``main`` takes any batch size (a symbolic first axis) and is built with TVM's
    default schedules: MetaSchedule's tuned records are per static shape. ``--static-batch`` builds
    it at the example's batch, tuned from the profile's database when the profile tunes (the build
    the search timed).
    """

    tolerance = (1e-3, 1e-4)  # TVM's kernels reorder float sums
    batch_axis = True
    batch_option = True

    def check(self, profile):
        if profile.backend != "tvm":
            raise ConfigError(f"--format tvm: the run's hardware profile {profile.name!r} uses backend "
                              f"{profile.backend!r}, so it has no TVM target to compile for; formats it can "
                              "produce: onnx, torch")
        _tvm_exporter()

    def write(self, model, example_input, profile, recipe, folder):
        try:
            path = _tvm_exporter()(model, example_input, profile, folder / "model.so",
                                   dynamic_batch=self.dynamic_batch)
        except RuntimeError as err:  # torch.export's "Constraints violated", a shape error, TVM's own
            if not self.dynamic_batch:
                raise
            from autoprune.inputs import batch_size

            traced = batch_size(example_input) if batch_size(example_input) > 1 else 2
            raise RuntimeError(f"the model does not compile with a symbolic batch axis (traced at batch {traced}; "
                               "--static-batch builds it at the example input's batch): "
                               f"{type(err).__name__}: {' '.join(str(err).split())[:160]}") from err
        return [Path(path)]

    def note(self, profile: HardwareProfile) -> str | None:
        from autoprune.hardware.tvm_backend import tvm_options

        if not self.dynamic_batch:
            return None
        tuned = tvm_options(profile).tuning_trials > 0
        return ("the library takes any batch size (a symbolic batch axis) and is built with TVM's default "
                + ("schedules, not the profile's MetaSchedule-tuned ones (tuned records are per static shape; "
                   "--static-batch exports the tuned build)" if tuned else "schedules")
                + "; the latency above was measured on the static-batch build the search timed")

    def load(self, folder):
        import tvm

        manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).is_file() else {}
        name = manifest.get("files", ["model.so"])[0]
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(folder / name)), tvm.cpu())

        def predict(x):
            out = vm["main"](*[tvm.runtime.tensor(v) for _, v in _named_arrays(x)])
            return (out if hasattr(out, "numpy") else out[0]).numpy()

        return predict


def _named_arrays(x: NumpyInputs) -> list[tuple[str, np.ndarray]]:
    """Numpy inputs in calling order, named as :func:`autoprune.inputs.named_tensors` names tensors (the ONNX
    graph's input names)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return [("input", x)]
    if isinstance(x, Mapping):
        return list(x.items())
    return [(f"input{i}", v) for i, v in enumerate(x)]


def _to_torch(x: NumpyInputs) -> Inputs:
    import numpy as np
    import torch

    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, Mapping):
        return {k: torch.from_numpy(v) for k, v in x.items()}
    return tuple(torch.from_numpy(v) for v in x)


def _rows(x: NumpyInputs) -> int:
    """The batch size of numpy inputs (the first dimension of the first array)."""
    return int(_named_arrays(x)[0][1].shape[0])


def _batch_of(samples: list[NumpyInputs]) -> NumpyInputs:
    """Batch-1 numpy inputs of one structure concatenated into one batch of the same structure."""
    import numpy as np

    first = samples[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(samples)
    if isinstance(first, Mapping):
        return {k: np.concatenate([s[k] for s in samples]) for k in first}
    return tuple(np.concatenate([s[i] for s in samples]) for i in range(len(first)))


def numpy_batch(sample: Inputs) -> NumpyInputs:
    """One dataset sample's input (no batch dimension) as a numpy batch of one, same structure."""
    from autoprune.inputs import map_tensors

    return numpy_inputs(map_tensors(sample, lambda t: t.unsqueeze(0)))


def numpy_inputs(inputs: Inputs) -> NumpyInputs:
    """A tensor, tuple or dict of tensors as the same structure of numpy arrays."""
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs.detach().cpu().numpy()
    if isinstance(inputs, Mapping):
        return {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    return tuple(v.detach().cpu().numpy() for v in inputs)


def load_export(folder: str | Path) -> Predictor:
    """A predictor for any export folder (its format is read from ``export.json``)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    return EXPORTERS.get(manifest["format"], where=str(folder / MANIFEST))().load(folder)


@dataclass(frozen=True, kw_only=True)
class Verification:
    """How the reloaded export compared with the pruned PyTorch model on validation inputs."""

    samples: int
    rtol: float
    atol: float
    max_abs_diff: float
    top1_agreement: float
    passed: bool
    #: the batch sizes the export was run at (1, and 8 when its batch axis is open)
    batch_sizes: list[int]


def verify(model: nn.Module, predictor: Predictor, inputs: list[NumpyInputs],
           tolerance: tuple[float, float]) -> Verification:
    """Run ``inputs`` through both and compare the (primary) outputs element-wise (``|a - b| <= atol + rtol * |b|``)
    and by top-1 (the arg-max over the last axis)."""
    import numpy as np
    import torch

    from autoprune.inputs import call, primary_output

    rtol, atol = tolerance
    sizes = [_rows(x) for x in inputs]
    samples = sum(size == 1 for size in sizes) or len(inputs)
    batches = sorted(set(sizes))
    worst, agree, passed = 0.0, 0, True
    with torch.no_grad():
        for x in inputs:
            expected = primary_output(call(model, _to_torch(x))).numpy()
            got = np.asarray(predictor(x))
            if got.shape != expected.shape:
                return Verification(samples=samples, rtol=rtol, atol=atol, max_abs_diff=float("inf"),
                                    top1_agreement=0.0, passed=False, batch_sizes=batches)
            worst = max(worst, float(np.max(np.abs(got - expected))))
            passed = passed and bool(np.all(np.abs(got - expected) <= atol + rtol * np.abs(expected)))
            agree += int(np.array_equal(got.argmax(-1), expected.argmax(-1)))
    return Verification(samples=samples, rtol=rtol, atol=atol, max_abs_diff=worst,
                        top1_agreement=agree / max(len(inputs), 1), passed=passed and agree == len(inputs),
                        batch_sizes=batches)


def _input_manifest(example: Inputs) -> dict[str, Any]:
    """The graph's inputs for ``export.json``: name, shape and dtype of each (``input_shape``/``input_dtype`` too
    when the model takes one tensor)."""
    import torch

    from autoprune.inputs import named_tensors

    inputs = [{"name": name, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
              for name, t in named_tensors(example)]
    if isinstance(example, torch.Tensor):
        return {"input_shape": inputs[0]["shape"], "input_dtype": inputs[0]["dtype"], "inputs": inputs}
    return {"inputs": inputs}


def extra_scores(task: Task, dense: nn.Module, model: nn.Module) -> dict[str, dict[str, dict[str, float]]]:
    """The task's ``extra_metrics`` of the dense and the pruned model on validation and test:
    ``{name: {"validation": {"dense": ..., "pruned": ...}, "test": {...}}}`` (empty when the task has none)."""
    if not task.extra_metrics:
        return {}
    from autoprune.training.finetune import gather_outputs

    splits = {"validation": task.val_set, **({"test": task.test_set} if task.test_set is not None else {})}
    gathered = {(split, who): gather_outputs(net, dataset) for split, dataset in splits.items()
                for who, net in (("dense", dense), ("pruned", model))}
    return {name: {split: {who: float(fn(*gathered[(split, who)])) for who in ("dense", "pruned")}
                   for split in splits} for name, fn in task.extra_metrics.items()}


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    out: Path
    files: list[Path]
    card: dict[str, Any]


def _warn(message: str) -> None:
    print(f"autoprune: warning: {message}", file=sys.stderr)


def _fresh_out(out: Path) -> None:
    """``out`` is a new (or empty) folder this process can create and write; checked before any work."""
    from autoprune.files import check_writable_folder

    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: already exists and is not empty; choose a new folder or remove it")
    check_writable_folder(out)


def _load_weights(path: Path, recipe: Rebuild, task: Task, trial: int, run_path: str | Path) -> nn.Module:
    """The trial's model with its saved weights; one-line errors when the file is not a state dict or not this
    trial's."""
    import pickle

    import torch

    try:
        state = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise ConfigError(f"{path}: not a readable state dict ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:160]}); "
                          "re-run the search's trial or restore the file") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict (a mapping of parameter names to tensors), "
                          f"got {type(state).__name__}")
    try:
        return rebuild(task, PruningPlan.from_dict(recipe.plan), recipe.settings, state).model
    except PlanError as err:
        raise ConfigError(f"{path}: the weights do not fit trial {trial} of {run_path} (the file was replaced, or it "
                          f"comes from another task or plan): {err}") from None


def export_trial(
    run_path: str | Path,
    trial: int,
    fmt: str,
    out: str | Path,
    *,
    force: bool = False,
    dynamic_batch: bool = True,
    storage: str | None = None,
    study: str | None = None,
    samples: int = 32,
    warn: Callable[[str], None] = _warn,
) -> ExportResult:
    """Export trial ``trial`` of the run at ``run_path`` as ``fmt`` into the new folder ``out``.

    ``storage``/``study``: read the run from that study database (its candidates too), filling ``run_path``.

    Raises:
        ConfigError: not a run folder, no such complete trial, a trial off the Pareto front without
            ``force``, a format the run's profile cannot produce, or ``out`` not empty.
        ExportError: the rebuilt model does not match its record, or the export does not match it.
    """
    from autoprune.hardware.protocol import measure_models
    from autoprune.inputs import batch_size
    from autoprune.pruning import model_stats
    from autoprune.results.model_card import build_card, card_markdown
    from autoprune.results.run import load_run
    from autoprune.task import resolve_task
    from autoprune.training import evaluate

    data = load_run(run_path, storage=storage, study=study)
    record = data.record(trial)
    if record.state != TrialState.COMPLETE:
        raise ConfigError(f"{run_path}: trial {trial} is {record.state} ({record.reason}); only complete trials "
                          "have fine-tuned weights to export")
    on_front = data.on_front(trial)
    if not on_front:
        front = ", ".join(str(r.number) for r in data.front)
        if not force:
            raise ConfigError(f"--trial {trial}: not on the Pareto front of {run_path} (front: {front}); "
                              "pass --force to export it anyway")
        warn(f"trial {trial} is not on the Pareto front (front: {front}); exporting it because of --force")
    if record.precision != "fp32":
        if not dynamic_batch:
            raise ConfigError(f"--static-batch: trial {trial} is {record.precision}, and its file was quantized with a "
                              "dynamic batch axis (the one the search scored); export it without --static-batch")
        return export_quantized(data, record, fmt, Path(out), on_front=on_front)
    exporter = EXPORTERS.get(fmt, where="--format")()
    if not dynamic_batch and not exporter.batch_option:
        raise ConfigError(f"--static-batch applies to onnx and tvm exports, not --format {fmt} (it takes any batch)")
    exporter.dynamic_batch = dynamic_batch and exporter.batch_axis
    profile = data.config.profile
    exporter.check(profile)
    out = Path(out)
    _fresh_out(out)
    weights = data.run.ensure_trial_files(trial) / "model.pt"
    if not weights.is_file():
        raise ConfigError(f"{run_path}: trial {trial} has no saved weights at {weights}")

    task = resolve_task(data.config.task_spec)
    recipe = Rebuild(task=data.config.task, plan=record.plan, settings=data.config.pruner,
                     task_options=data.config.task_spec.options())
    dense_model = task.build_model()
    model = _load_weights(weights, recipe, task, trial, run_path)
    stats = model_stats(model, task.example_input)
    if (stats.macs, stats.params) != (record.macs, record.params):
        raise ExportError(f"trial {trial}: the rebuilt model has {stats.macs} MACs / {stats.params} params, its record "
                          f"{record.macs} / {record.params}; the task's model or the pruner changed since the search")
    accuracy = evaluate(model, task.val_set, task.metric)
    if abs(accuracy - record.accuracy) > 1.0 / len(task.val_set) + 1e-9:
        raise ExportError(f"trial {trial}: the rebuilt model scores {accuracy:.4f}, its record {record.accuracy:.4f}; "
                          "the task's data or weights changed since the search")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        n = min(samples, len(task.val_set))
        inputs = [numpy_batch(task.val_set[i][0]) for i in range(n)]
        if exporter.dynamic_batch:  # and a batch of 8 (repeated when there are fewer samples), as users serve
            inputs.append(_batch_of([inputs[i % n] for i in range(8)]))
        try:  # exporters and runtimes (torch.onnx, TVM) report what they cannot convert as RuntimeError
            files = exporter.write(model, task.example_input, profile, recipe, staging)
            atomic_write_json(staging / MANIFEST, {"format": fmt, "files": [f.name for f in files], "trial": trial,
                                                   "batch": "dynamic" if exporter.dynamic_batch else
                                                   batch_size(task.example_input),
                                                   **_input_manifest(task.example_input)})
            check = verify(model, exporter.load(staging), inputs, exporter.tolerance)
        except RuntimeError as err:
            raise ExportError(f"--format {fmt}: exporting or reloading trial {trial} failed: {type(err).__name__}: "
                              f"{' '.join(str(err).split())[:300]}; nothing was written") from err
        if not check.passed:
            raise ExportError(f"--format {fmt}: the exported model does not match the pruned PyTorch model on {n} "
                              f"validation inputs (max |diff| {check.max_abs_diff:.3g}, top-1 agreement "
                              f"{100 * check.top1_agreement:.1f}%, tolerance rtol {check.rtol} atol {check.atol}); "
                              "nothing was written")
        dense_stats, pruned_stats = measure_models(profile, [dense_model, model], task.example_input)
        card = build_card(data=data, record=record, task=task, fmt=fmt, files=files, on_front=on_front,
                          dense_model=dense_model, model=model, accuracy_at_export=accuracy,
                          latency={"dense": dense_stats, "pruned": pruned_stats},
                          verification=asdict(check), rebuild=recipe.to_dict(),
                          extra_metrics=extra_scores(task, dense_model, model), note=exporter.note(profile))
        atomic_write_json(staging / "model_card.json", card)
        atomic_write_text(staging / "model_card.md", card_markdown(card))
        staging.chmod(umask_mode(0o777))
        if out.is_dir():
            out.rmdir()  # empty (checked above): rename needs the name free
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out=out, files=[out / f.name for f in files], card=card)


def quantized_tolerance(val_samples: int) -> float:
    """How far a shipped quantized file's validation score may be from the score the search recorded for it:
    one sample (the same file in the same runtime; only thread scheduling can move a requantised value)."""
    return 1.0 / max(val_samples, 1) + 1e-9


def export_quantized(data: Any, record: Any, fmt: str, out: Path, *, on_front: bool) -> ExportResult:
    """Export a quantized trial: the ONNX file the search scored and measured, verified against its record.

    The file is copied as ``model.onnx``, reloaded from the export folder in ONNX Runtime and scored over
    the whole validation split: it must reproduce the accuracy recorded in the search within
    :func:`quantized_tolerance`. Its top-1 agreement with the fp32 PyTorch candidate is reported. Latency is
    re-measured interleaved: the dense model, the fp32 candidate and the quantized file.

    Raises:
        ConfigError: a format other than onnx (only the ONNX file is the quantized model), missing files.
        ExportError: the fp32 candidate or the quantized file does not reproduce its record.
    """
    import numpy as np
    import torch

    from autoprune.hardware.base import get_backend
    from autoprune.hardware.protocol import prepare_measured, prepare_onnx_measured, time_prepared
    from autoprune.hardware.quantize import onnx_outputs
    from autoprune.pruning import model_stats
    from autoprune.results.model_card import build_card, card_markdown
    from autoprune.task import resolve_task
    from autoprune.training import evaluate

    trial, precision = record.number, record.precision
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt}: trial {trial} is {precision}; only --format onnx ships its quantized "
                          "model (the other formats would ship fp32 weights the search did not score)")
    _fresh_out(out)
    source = Path(record.quantization.get("onnx_path") or data.run.trial_onnx(trial, precision))
    weights = data.run.trial_weights(trial)
    for path in (source, weights):
        if not path.is_file():
            raise ConfigError(f"{data.run.path}: trial {trial} has no saved file at {path}")
    task = resolve_task(data.config.task)
    recipe = Rebuild(task=data.config.task, plan=record.plan, settings=data.config.pruner)
    dense_model = task.build_model()
    model = recipe.model(task, weights)
    stats = model_stats(model, task.example_input)
    if (stats.macs, stats.params) != (record.macs, record.params):
        raise ExportError(f"trial {trial}: the rebuilt model has {stats.macs} MACs / {stats.params} params, its record "
                          f"{record.macs} / {record.params}; the task's model or the pruner changed since the search")
    fp32_accuracy = evaluate(model, task.val_set, task.metric)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files = [atomic_write_bytes(staging / "model.onnx", source.read_bytes())]
        atomic_write_json(staging / MANIFEST, {"format": fmt, "precision": precision, "files": ["model.onnx"],
                                               "trial": trial, **_input_manifest(task.example_input)})
        shipped = (staging / "model.onnx").read_bytes()
        outputs, targets = onnx_outputs(shipped, task.val_set, threads=task.recipe.threads,
                                        device=data.config.profile.device)
        accuracy = float(task.metric(outputs, targets))
        from autoprune.inputs import call, primary_output

        with torch.no_grad():
            reference = torch.cat([primary_output(call(model, x))
                                   for x, _ in torch.utils.data.DataLoader(task.val_set, batch_size=256)])
        agreement = float((outputs.argmax(-1) == reference.argmax(-1)).float().mean())
        tolerance = quantized_tolerance(len(task.val_set))
        check = {"samples": len(task.val_set), "accuracy": accuracy, "recorded_accuracy": record.accuracy,
                 "tolerance": tolerance, "top1_agreement": agreement,
                 "max_abs_diff": float(np.max(np.abs(outputs.numpy() - reference.numpy()))),
                 "passed": abs(accuracy - record.accuracy) <= tolerance}
        if not check["passed"]:
            raise ExportError(f"--format onnx: the {precision} file of trial {trial} scores {accuracy:.4f} on the "
                              f"validation split, its record {record.accuracy:.4f} (tolerance {tolerance:.4f}); "
                              "nothing was written")
        backend = get_backend(data.config.profile)
        prepared = [prepare_measured(backend, dense_model, task.example_input),
                    prepare_onnx_measured(backend, shipped, task.example_input),
                    prepare_measured(backend, model, task.example_input)]
        dense_stats, quantized_stats, fp32_stats = time_prepared(prepared, backend)
        card = build_card(data=data, record=record, task=task, fmt=fmt, files=files, on_front=on_front,
                          dense_model=dense_model, model=model, accuracy_at_export=accuracy,
                          latency={"dense": dense_stats, "pruned": quantized_stats}, verification=check,
                          rebuild=recipe.to_dict(), quantization={**record.quantization,
                                                                  "fp32_accuracy": fp32_accuracy,
                                                                  "speedup_vs_fp32": fp32_stats.median_ms
                                                                  / quantized_stats.median_ms})
        atomic_write_json(staging / "model_card.json", card)
        atomic_write_text(staging / "model_card.md", card_markdown(card))
        staging.chmod(umask_mode(0o777))
        if out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out=out, files=[out / f.name for f in files], card=card)
