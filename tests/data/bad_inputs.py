"""The bad-input corpus: every command and every file it reads, given something wrong.

Each case is a command line, the files it needs (written into a fresh folder first) and a
fragment the one-line error must contain (the file, field or value named, or what is valid).
``tests/test_bad_inputs.py`` runs them all and checks: exit code 2, exactly one line on
stderr starting ``autoprune: error:``, no traceback, and nothing written anywhere.

Placeholders in arguments and file contents: ``{tmp}`` the case's folder, ``{run}`` a copy of a
finished tiny search (``run/`` inside ``{tmp}``, only copied when used), ``{hw}`` and ``{space}`` a
valid fast profile and space, ``{root}`` the repository. ``setup`` names a fixture step
(``tests/test_bad_inputs.py: SETUPS``) that damages the run copy or the file system.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TASK = "tests.tiny_task:tiny_task"
NOT_UTF8 = b"name: caf\xe9\nbackend: onnxruntime\n"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: str | None = None
    #: run as a subprocess (the real console script's behaviour), not in-process
    subprocess: bool = False


def _hw(text: str) -> dict[str, str]:
    return {"p.yaml": text}


def _space(text: str) -> dict[str, str]:
    return {"s.yaml": "name: s\n" + text}


def profile_case(id: str, text: str | bytes, expect: str) -> Case:
    return Case(f"profile-{id}", ("profile", "--task", TASK, "--hw", "{tmp}/p.yaml"), expect, {"p.yaml": text})


def space_case(id: str, text: str | bytes, expect: str) -> Case:
    body = text if isinstance(text, bytes) else "name: s\n" + text
    return Case(f"space-{id}", ("inspect", "--task", TASK, "--space", "{tmp}/s.yaml"), expect, {"s.yaml": body})


def config_case(id: str, text: str | bytes, expect: str) -> Case:
    files = () if isinstance(text, bytes) or "profile:" in text else ("--hw", "{hw}", "--space", "{space}")
    return Case(f"config-{id}", ("search", "--task", TASK, "--config", "{tmp}/c.yaml", *files, "--out", "{tmp}/out"),
                expect, {"c.yaml": text})


SEARCH = ("search", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--agent", "random", "--trials", "2")
#: the console cases run without the tests' fake backend: the shipped ONNX Runtime profile
CONSOLE_SEARCH = ("search", "--task", TASK, "--hw", "{root}/hw_profiles/cpu-onnxruntime.yaml", "--space", "{space}",
                  "--trials", "2")


def search_case(id: str, extra: tuple[str, ...], expect: str, **kw) -> Case:
    out = () if "--out" in extra else ("--out", "{tmp}/out")
    return Case(f"search-{id}", SEARCH + extra + out, expect, **kw)


def sweep_case(id: str, text: str | bytes, expect: str, extra: tuple[str, ...] = ()) -> Case:
    return Case(f"sweep-{id}", ("sweep", "run", "{tmp}/w.yaml", "--out", "{tmp}/out") + extra, expect,
                {"w.yaml": text})


#: a real ONNX Runtime CPU profile (it runs int8; the corpus's fake one runs fp32 only) and a space asking for int8
ORT_HW = "{root}/hw_profiles/cpu-onnxruntime.yaml"
INT8 = "name: s\nmin_channels: 4\nprecisions: [fp32, int8]\n"


def precision_case(id: str, space: str, expect: str, *, task: str = TASK, hw: str = ORT_HW) -> Case:
    """A search whose space asks for a precision: refused before any trial (config time), one line."""
    return Case(f"precision-{id}", ("search", "--task", task, "--hw", hw, "--space", "{tmp}/s.yaml", "--trials", "1",
                                    "--out", "{tmp}/out"), expect, {"s.yaml": space})


GOOD_ENTRY = "  - name: a\n    task: " + TASK + "\n    profile: {hw}\n    space: {space}\n    trials: 1\n"

CASES: list[Case] = [
    # ---- hardware profiles
    Case("profile-missing", ("profile", "--task", TASK, "--hw", "{tmp}/nope.yaml"), "nope.yaml: file not found"),
    profile_case("not-yaml", "name: [x\n", "p.yaml: not valid YAML"),
    profile_case("not-utf8", NOT_UTF8, "p.yaml: not UTF-8"),
    profile_case("list", "- a\n- b\n", "expected a mapping of fields"),
    profile_case("empty", "", "expected a mapping of fields"),
    profile_case("unknown-field", "name: p\nbackend: onnxruntime\nthread: 2\n", "unknown field `thread`"),
    profile_case("no-name", "backend: onnxruntime\n", "missing required field `name`"),
    profile_case("no-backend", "name: p\n", "missing required field `backend`"),
    profile_case("bad-backend", "name: p\nbackend: tensorrt\n", "`backend` must be one of"),
    profile_case("threads-0", "name: p\nbackend: onnxruntime\nthreads: 0\n",
                 "`threads` must be an integer >= 1, got 0"),
    profile_case("threads-str", "name: p\nbackend: onnxruntime\nthreads: '2'\n", "`threads` must be an integer"),
    profile_case("threads-bool", "name: p\nbackend: onnxruntime\nthreads: yes\n", "got True"),
    profile_case("batch-float", "name: p\nbackend: onnxruntime\nbatch_size: 1.5\n", "`batch_size` must be an integer"),
    profile_case("input-shape-str", "name: p\nbackend: onnxruntime\ninput_shape: 1x8x8\n",
                 "`input_shape` must be a list"),
    profile_case("input-shape-zero", "name: p\nbackend: onnxruntime\ninput_shape: [0, 8]\n",
                 "`input_shape` must be a list of positive integers"),
    profile_case("fast-structures-str", "name: p\nbackend: onnxruntime\nfast_structures: channel\n",
                 "`fast_structures` must be a list"),
    profile_case("fast-structures-bad", "name: p\nbackend: onnxruntime\nfast_structures: [blocks]\n",
                 "`fast_structures` must be one of"),
    profile_case("max-cv-neg", "name: p\nbackend: onnxruntime\nmax_cv: -1\n", "`max_cv` must be a number"),
    profile_case("fp16-cpu", "name: p\nbackend: onnxruntime\nprecision: fp16\n", "fp16 needs `device: cuda`"),
    profile_case("calibration", "name: p\nbackend: onnxruntime\nonnxruntime: {calibration: magic}\n",
                 "`calibration` must be one of minmax, entropy, percentile"),
    profile_case("calibration-samples-0", "name: p\nbackend: onnxruntime\nonnxruntime: {calibration_samples: 0}\n",
                 "`calibration_samples` must be an integer >= 1, got 0"),
    profile_case("device", "name: p\nbackend: onnxruntime\ndevice: tpu\n", "`device` must be one of cpu, cuda"),
    profile_case("tvm-section", "name: p\nbackend: onnxruntime\ntvm: {target: llvm}\n",
                 "the `tvm` section only applies to `backend: tvm`"),
    profile_case("options-key", "name: p\nbackend: onnxruntime\noptions: {}\n", "unknown field `options`"),
    profile_case("warmup-str", "name: p\nbackend: onnxruntime\nwarmup_s: fast\n", "`warmup_s` must be a number"),
    profile_case("name-empty", "name: ''\nbackend: onnxruntime\n", "`name` must be a non-empty string"),
    profile_case("name-list", "name: [a]\nbackend: onnxruntime\n", "`name` must be a non-empty string"),
    profile_case("round-to-0", "name: p\nbackend: onnxruntime\nround_to: 0\n", "`round_to` must be an integer >= 1"),
    Case("profile-dir", ("profile", "--task", TASK, "--hw", "{tmp}/p.yaml"), "p.yaml: is a folder, not a YAML file",
         {"p.yaml/x": "1"}),
    # ---- search spaces (inspect reads `ignore`; search and sensitivity the rest)
    space_case("ignore-null", "ignore: null\n", "`ignore` must be a list of layer-name globs, got None"),
    space_case("ignore-int", "ignore: 5\n", "`ignore` must be a list of layer-name globs, got 5"),
    space_case("ignore-str", "ignore: 'stem.*'\n", "`ignore` must be a list of layer-name globs, got 'stem.*'"),
    space_case("ignore-ints", "ignore: [5]\n", "`ignore` must be a list of layer-name globs"),
    space_case("structures-str", "structures: channel\n", "`structures` must be a list"),
    space_case("structures-empty", "structures: []\n", "`structures` must list at least one structure"),
    space_case("structures-bad", "structures: [blocks]\n", "`structures` must be one of"),
    space_case("ratio-order", "ratio_min: 0.6\nratio_max: 0.2\n", "`ratio_min` (0.6) must be <= `ratio_max` (0.2)"),
    space_case("ratio-step-0", "ratio_step: 0\n", "`ratio_step` must be a number in"),
    space_case("ratio-max-1", "ratio_max: 1.0\n", "`ratio_max` must be a number in [0.0, 0.99]"),
    space_case("importance", "importance: magic\n", "`importance` must be one of"),
    space_case("nm-order", "nm: [4, 2]\n", "`nm` must be [N, M] with 0 < N < M"),
    space_case("nm-str", "nm: '2:4'\n", "`nm` must be [N, M]"),
    space_case("layer-structures-list", "layer_structures: [Conv2d]\n", "`layer_structures` must map layer types"),
    space_case("layer-structures-str", "layer_structures: {Conv2d: channel}\n",
               "`layer_structures.Conv2d` must be a list"),
    space_case("min-channels-0", "min_channels: 0\n", "`min_channels` must be an integer >= 1"),
    space_case("mask-scope", "mask_scope: model\n", "`mask_scope` must be one of layer, group"),
    space_case("unknown", "ratios: [0.5]\n", "unknown field `ratios`"),
    space_case("not-utf8", b"name: s\nignore: ['caf\xe9']\n", "s.yaml: not UTF-8"),
    space_case("round-to-neg", "round_to: -1\n", "`round_to` must be an integer >= 1"),
    Case("space-missing", ("inspect", "--task", TASK, "--space", "{tmp}/nope.yaml"), "nope.yaml: file not found"),
    space_case("precisions-bad", "precisions: [fp32, int4]\n", "`precisions` must be one of fp32, int8, fp16"),
    space_case("precisions-empty", "precisions: []\n", "`precisions` must list at least one precision"),
    space_case("precisions-repeat", "precisions: [int8, int8]\n", "`precisions` repeats one"),
    space_case("keep-fp32-str", "precisions: [fp32, int8]\nkeep_fp32: fc\n",
               "`keep_fp32` must be a list of layer-name globs, got 'fc'"),
    space_case("keep-fp32-fp32-only", "keep_fp32: [fc]\n", "`keep_fp32` applies to quantized plans, but `precisions` "
                                                            "lists only fp32"),
    space_case("search-keep-fp32-alone", "precisions: [fp32, int8]\nsearch_keep_fp32: true\n",
               "`search_keep_fp32` needs `keep_fp32`"),
    space_case("search-keep-fp32-str", "precisions: [fp32, int8]\nkeep_fp32: [fc]\nsearch_keep_fp32: 'yes'\n",
               "`search_keep_fp32` must be true or false, got 'yes'"),
    # ---- precisions a search cannot use: the profile's backend cannot run it, no calibration data, a model that
    # cannot be converted, layers to keep in fp32 that the model does not have (all before any trial)
    precision_case("int8-fake-backend", INT8, "`precisions` lists int8, which hardware profile t-fake (backend fake, "
                                              "cpu) cannot run; it runs fp32", hw="{hw}"),
    precision_case("fp16-on-cpu", INT8.replace("int8", "fp16"),
                   "`precisions` lists fp16, which hardware profile cpu-onnxruntime (backend onnxruntime, cpu) cannot "
                   "run; it runs fp32, int8"),
    precision_case("int8-on-cuda", INT8, "`precisions` lists int8, which hardware profile cuda-onnxruntime (backend "
                                         "onnxruntime, cuda) cannot run; it runs fp32, fp16",
                   hw="{root}/hw_profiles/cuda-onnxruntime.yaml"),
    precision_case("int8-no-calibration-data", INT8, "search space s: `precisions` lists int8, but the task's model "
                                                     "cannot be converted: int8 needs calibration data: the task's "
                                                     "training split is empty",
                   task="tests.tiny_task:tiny_task_without_training_data"),
    precision_case("int8-unquantizable", INT8, "int8 quantization failed in quantize_static: AssertionError: scale "
                                               "issue; node /model/Mul_1 (op Mul, in the model's own forward) outputs "
                                               "inf or NaN", task="tests.tiny_task:overflowing_task"),
    precision_case("keep-fp32-no-layer", INT8 + "keep_fp32: [head]\n",
                   "keep_fp32 'head' matches no layer of the model; its layers: stem, stem.0"),
    precision_case("keep-fp32-folded", INT8 + "keep_fp32: ['stem.1']\n",
                   "keep_fp32 'stem.1' matches stem.1, which no node of the exported graph runs"),
    # ---- search configs (--config)
    config_case("unknown", "trails: 5\n", "unknown field `trails`"),
    config_case("profile-int", "profile: 5\n", "`profile` must be the path of a YAML file, got 5"),
    config_case("profile-missing", "profile: nope.yaml\n", "nope.yaml: file not found"),
    config_case("objectives-str", "objectives: accuracy\n", "`objectives` must be a list"),
    config_case("objectives-bad", "objectives: [accuracy, speed]\n", "`objectives` must be one of"),
    config_case("objectives-repeat", "objectives: [accuracy, accuracy]\n", "`objectives` repeats a name"),
    config_case("trials-str", "trials: '12'\n", "`trials` must be an integer >= 1, got '12'"),
    config_case("seed-neg", "seed: -1\n", "`seed` must be an integer >= 0"),
    config_case("max-latency-neg", "max_latency_ms: -1\n", "`max_latency_ms` must be a number"),
    config_case("min-accuracy-str", "min_accuracy: high\n", "`min_accuracy` must be a number"),
    config_case("reference-key", "reference: {speed: 1}\n", "`reference key` must be one of"),
    config_case("weights-list", "weights: [1, 2]\n", "`weights` must map objective names to numbers"),
    config_case("proxy-keep-0", "proxy_keep: 0\n", "`proxy_keep` must be a number in [0.01, 1.0]"),
    config_case("warm-start-str", "warm_start: some\n", "`warm_start` must be an integer >= 0, got 'some'"),
    config_case("finetune-neg", "finetune: {epochs: -1}\n", "epochs >= 0"),
    config_case("finetune-unknown", "finetune: {epoch: 1}\n", "unknown field `epoch`"),
    config_case("finetune-str", "finetune: fast\n", "`finetune` must map fine-tune recipe fields"),
    config_case("predictor-int", "predictor: 5\n", "`predictor` must be auto, off or the path"),
    config_case("not-utf8", b"trials: 5\nagent: caf\xe9\n", "c.yaml: not UTF-8"),
    config_case("list", "- trials\n", "expected a mapping of fields"),
    Case("config-missing", ("search", "--task", TASK, "--config", "{tmp}/nope.yaml", "--out", "{tmp}/out"),
         "nope.yaml: file not found"),
    # ---- search flags and run folders
    search_case("agent", ("--agent", "bogus"), "`agent` must be one of"),
    search_case("warm-start-neg", ("--warm-start", "-1"), "`warm_start` must be an integer >= 0"),
    search_case("warm-start-plan-agent", ("--agent", "uniform", "--warm-start", "2"),
                "`warm_start` seeds the sampler agents (tpe, nsga2, random); agent 'uniform'"),
    search_case("task-unknown", ("--task", "nosuch"), "unknown task 'nosuch'"),
    search_case("task-not-task", ("--task", "tests.tiny_task:not_a_task"), "expected autoprune.Task"),
    search_case("task-no-module", ("--task", "no_such_module:fn"), "cannot import module 'no_such_module'"),
    search_case("trials-0", ("--trials", "0"), "`trials` must be an integer >= 1, got 0"),
    search_case("trials-abc", ("--trials", "abc"), "argument --trials: invalid int value: 'abc'"),
    search_case("objectives-bad", ("--objectives", "accuracy,speed"), "`objectives` must be one of"),
    search_case("objectives-empty", ("--objectives", ","), "`objectives` must name at least one objective"),
    search_case("workers-0", ("--workers", "0"), "`workers` must be an integer >= 1, got 0"),
    search_case("cpus-neg", ("--cpus-per-trial", "-1"), "`cpus_per_trial` must be a number >= 0.0"),
    search_case("retries-neg", ("--max-retries", "-1"), "`max_retries` must be an integer >= 0"),
    search_case("margin", ("--predictor-margin", "2"), "`predictor_margin` must be a number in [0.0, 0.99]"),
    search_case("predictor-missing", ("--predictor", "{tmp}/nope.json"), "nope.json: file not found"),
    search_case("predictor-not-json", ("--predictor", "{tmp}/p.json"), "p.json: not valid JSON",
                files={"p.json": "{oops"}),
    search_case("predictor-not-one", ("--predictor", "{tmp}/p.json"), "p.json: not a latency predictor",
                files={"p.json": '{"a": 1}'}),
    search_case("predictor-types", ("--predictor", "{tmp}/p.json"), "p.json: not a latency predictor",
                files={"p.json": '{"profile": "t-fake", "table": 5, "slope": "x"}'}),
    search_case("predictor-other-profile", ("--predictor", "{tmp}/p.json"), "calibrated on profile 'elsewhere'",
                files={"p.json": '{"profile": "elsewhere"}'}),
    search_case("storage-scheme", ("--storage", "notadb://x"), "--storage notadb://x"),
    search_case("storage-refused", ("--storage", "sqlite:///{tmp}/no/such/dir/s.db"), "--storage sqlite:///"),
    search_case("epochs-neg", ("--epochs", "-1"), "epochs >= 0"),
    search_case("optimizer", ("--optimizer", "lion"), "optimizer in"),
    search_case("lr-0", ("--lr", "0"), "lr > 0"),
    search_case("out-file", ("--out", "{tmp}/f"), "f: exists and is not a folder", files={"f": "x"}),
    search_case("out-under-file", ("--out", "{tmp}/f/run"), "is a file, not a folder", files={"f": "x"}),
    search_case("out-unwritable", ("--out", "/sys/autoprune-run"), "/sys: cannot write"),
    Case("search-out-other-space", ("search", "--task", TASK, "--hw", "{hw}", "--space", "{tmp}/s.yaml", "--agent",
                                     "random", "--out", "{run}"),
         "holds a search with a different `space`", {"s.yaml": "name: other\n"}),
    search_case("out-config-corrupt", ("--out", "{run}"), "config.json: not valid JSON",
                files={"run/config.json": "{oops"}),
    search_case("out-db-corrupt", ("--out", "{run}"), "study.db", setup="corrupt_db"),
    search_case("out-readonly", ("--out", "{run}"), "read-only", setup="readonly_run"),
    search_case("min-accuracy-above-dense", ("--min-accuracy", "1.5"), "min_accuracy 1.5 is above the dense"),
    search_case("max-latency-unmeetable", ("--max-latency-ms", "1e-9"), "max_latency_ms 1e-09 is below"),
    search_case("memory-objective", ("--objectives", "accuracy,memory"), "`memory` is not measured"),
    # ---- profile, inspect, sensitivity, calibrate
    Case("inspect-round-to-0", ("inspect", "--task", TASK, "--space", "{space}", "--round-to", "0"),
         "--round-to must be an integer >= 1"),
    Case("inspect-task", ("inspect", "--task", "nosuch", "--space", "{space}"), "unknown task 'nosuch'"),
    Case("sensitivity-ratio-2", ("sensitivity", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--ratios", "2",
                                 "--out", "{tmp}/s.json"), "--ratios: every ratio must be in (0, 1)"),
    Case("sensitivity-ratio-abc", ("sensitivity", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--ratios",
                                   "a,b", "--out", "{tmp}/s.json"), "--ratios: expected comma-separated numbers"),
    Case("sensitivity-out-under-file", ("sensitivity", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--out",
                                        "{tmp}/f/s.json"), "is a file, not a folder", files={"f": "x"}),
    Case("sensitivity-out-dir", ("sensitivity", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--out",
                                 "{tmp}/d"), "d: is a folder", files={"d/keep": "x"}),
    Case("sensitivity-out-unwritable", ("sensitivity", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--out",
                                        "/sys/s.json"), "/sys: cannot write"),
    Case("calibrate-fit-1", ("calibrate", "--task", TASK, "--hw", "{hw}", "--fit", "1"), "--fit must be >= 2"),
    Case("calibrate-out-under-file", ("calibrate", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--out",
                                      "{tmp}/f/p.json"), "is a file, not a folder", files={"f": "x"}),
    Case("calibrate-out-unwritable", ("calibrate", "--task", TASK, "--hw", "{hw}", "--space", "{space}", "--out",
                                      "/sys/p.json"), "/sys: cannot write"),
    Case("calibrate-hw-missing", ("calibrate", "--task", TASK, "--hw", "{tmp}/nope.yaml"), "nope.yaml: file not found"),
    # ---- run folders and study databases: pareto, report, pick
    Case("pareto-missing", ("pareto", "{tmp}/nope"), "nope: not a run folder"),
    Case("pareto-not-run", ("pareto", "{tmp}/d"), "d: not a run folder", files={"d/x": "1"}),
    Case("pareto-db-corrupt", ("pareto", "{run}"), "study.db: not a readable study database", setup="corrupt_db"),
    Case("pareto-db-truncated", ("pareto", "{run}"), "study.db: not a readable study database", setup="truncate_db"),
    Case("pareto-db-empty-schema", ("pareto", "{run}"), "study.db: holds no autoprune study", setup="empty_db"),
    Case("pareto-config-corrupt", ("pareto", "{run}"), "config.json: not valid JSON", files={"run/config.json": "{x"}),
    Case("pareto-config-shape", ("pareto", "{run}"), "config.json: not a search config",
         files={"run/config.json": "[1, 2]"}),
    Case("pareto-dense-corrupt", ("pareto", "{run}"), "dense.json: not valid JSON", files={"run/dense.json": "{x"}),
    Case("pareto-dense-shape", ("pareto", "{run}"), "dense.json: not a dense reference",
         files={"run/dense.json": '{"accuracy": 1}'}),
    Case("pareto-no-dense", ("pareto", "{run}"), "has not measured the dense model yet", setup="drop_dense"),
    Case("pareto-environment-corrupt", ("pareto", "{run}"), "environment.json: not valid JSON",
         files={"run/environment.json": "\xff"}),
    Case("report-db-corrupt", ("report", "{run}"), "study.db: not a readable study database", setup="corrupt_db"),
    Case("report-readonly", ("report", "{run}"), "cannot write there (read-only file system)", setup="readonly_run"),
    Case("pareto-readonly", ("pareto", "{run}"), "is read-only", setup="readonly_run"),
    Case("pick-readonly", ("pick", "{run}", "--knee"), "is read-only", setup="readonly_run"),
    Case("export-readonly-run", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/out"), "is read-only",
         setup="readonly_run"),
    Case("pick-db-corrupt", ("pick", "{run}", "--knee"), "study.db: not a readable study database",
         setup="corrupt_db"),
    Case("pick-no-rule", ("pick", "{run}"), "one of the arguments --max-latency-ms --min-accuracy --knee is required"),
    Case("pick-too-fast", ("pick", "{run}", "--max-latency-ms", "0"), "no Pareto model within 0 ms"),
    Case("pick-too-accurate", ("pick", "{run}", "--min-accuracy", "99.999"), "no Pareto model reaches 100.00%"),
    Case("pick-accuracy-neg", ("pick", "{run}", "--min-accuracy", "-1"), "--min-accuracy must be"),
    Case("pick-accuracy-over-100", ("pick", "{run}", "--min-accuracy", "100.5"), "--min-accuracy must be"),
    # ---- export: trials, formats, folders, state dicts
    Case("export-trial", ("export", "{run}", "--trial", "999", "--out", "{tmp}/out"), "no finished trial 999"),
    Case("export-format", ("export", "{run}", "--trial", "0", "--force", "--format", "coreml", "--out", "{tmp}/out"),
         "coreml"),
    Case("export-tvm", ("export", "{run}", "--trial", "0", "--force", "--format", "tvm", "--out", "{tmp}/out"),
         "has no TVM target to compile for"),
    Case("export-out-not-empty", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/d"),
         "already exists and is not empty", files={"d/x": "1"}),
    Case("export-out-file", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/f"),
         "f: exists and is not a folder", files={"f": "1"}),
    Case("export-static-batch-torch", ("export", "{run}", "--trial", "0", "--force", "--format", "torch",
                                       "--static-batch", "--out", "{tmp}/out"),
         "--static-batch applies to onnx and tvm exports"),
    Case("export-out-under-file", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/f/e"),
         "is a file, not a folder", files={"f": "1"}),
    Case("export-out-unwritable", ("export", "{run}", "--trial", "0", "--force", "--out", "/sys/e"),
         "/sys: cannot write"),
    Case("export-foreign-weights", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/out"),
         "model.pt: the weights do not fit trial 0", setup="foreign_weights"),
    Case("export-garbage-weights", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/out"),
         "model.pt: not a readable state dict", files={"run/trials/0000/model.pt": "garbage"}),
    Case("export-missing-weights", ("export", "{run}", "--trial", "0", "--force", "--out", "{tmp}/out"),
         "has no saved weights", setup="drop_weights"),
    Case("export-db-corrupt", ("export", "{run}", "--trial", "0", "--out", "{tmp}/out"),
         "study.db: not a readable study database", setup="corrupt_db"),
    # ---- sweeps
    Case("sweep-missing", ("sweep", "run", "{tmp}/nope.yaml"), "nope.yaml: file not found"),
    sweep_case("searches-not-list", "name: w\nsearches: {a: 1}\n", "`searches` must be a list of searches"),
    sweep_case("entry-str", "name: w\nsearches:\n  - just-a-name\n", "each search needs at least `name` and `profile`"),
    sweep_case("entry-no-profile", "name: w\nsearches:\n  - name: a\n",
               "each search needs at least `name` and `profile`"),
    sweep_case("duplicate", "name: w\nsearches:\n" + GOOD_ENTRY + GOOD_ENTRY, "names must be unique, 'a' repeats"),
    sweep_case("bad-name", "name: w\nsearches:\n  - name: a b\n    task: t\n    profile: {hw}\n    space: {space}\n",
               "`name` must be letters, digits"),
    sweep_case("profile-missing", "name: w\nsearches:\n  - name: a\n    profile: {tmp}/nope.yaml\n",
               "nope.yaml: file not found"),
    sweep_case("agent", "name: w\nsearches:\n" + GOOD_ENTRY + "    agent: bogus\n", "`agent` must be one of"),
    sweep_case("tolerance", "name: w\naccuracy_tolerance: 2\nsearches:\n" + GOOD_ENTRY,
               "`accuracy_tolerance` must be a number in [0.0, 1.0]"),
    sweep_case("workers-0", "name: w\nexecution: {workers: 0}\nsearches:\n" + GOOD_ENTRY,
               "execution: `workers` must be an integer >= 1"),
    sweep_case("execution-str", "name: w\nexecution: fast\nsearches:\n" + GOOD_ENTRY,
               "`execution` must map execution settings"),
    sweep_case("unknown", "name: w\nnightly: true\nsearches:\n" + GOOD_ENTRY, "unknown field `nightly`"),
    sweep_case("no-name", "searches:\n" + GOOD_ENTRY, "missing required field `name`"),
    sweep_case("not-utf8", b"name: caf\xe9\nsearches: []\n", "w.yaml: not UTF-8"),
    sweep_case("finetune-str", "name: w\nsearches:\n" + GOOD_ENTRY + "    finetune: fast\n",
               "`finetune` must map fine-tune recipe fields"),
    Case("sweep-ignore-str", ("sweep", "run", "{tmp}/w.yaml", "--out", "{tmp}/out"),
         "`ignore` must be a list of layer-name globs",
         {"w.yaml": "name: w\nsearches:\n" + GOOD_ENTRY.replace("space: {space}", "space: {tmp}/s.yaml"),
          "s.yaml": "name: s\nignore: 'stem.*'\n"}),
    sweep_case("until", "name: w\nsearches:\n" + GOOD_ENTRY, "--until 25:99: expected a local time HH:MM",
               extra=("--until", "25:99")),
    Case("sweep-out-file", ("sweep", "run", "{tmp}/w.yaml", "--out", "{tmp}/out"), "out: exists and is not a folder",
         {"w.yaml": "name: w\nsearches:\n" + GOOD_ENTRY, "out": "x"}),
    Case("sweep-submit-missing", ("sweep", "submit", "{tmp}/nope.yaml"), "nope.yaml: file not found"),
    Case("sweep-submit-until", ("sweep", "submit", "{tmp}/w.yaml", "--until", "7pm", "--out", "/x"),
         "--until 7pm: expected a local time HH:MM", {"w.yaml": "name: w\nsearches:\n" + GOOD_ENTRY}),
    Case("sweep-status-address", ("sweep", "status", "raysubmit_x", "--address", "127.0.0.1:8265"),
         "expected the job server's URL"),
    Case("sweep-logs-address", ("sweep", "logs", "raysubmit_x", "--address", "ftp://head"),
         "expected the job server's URL"),
    Case("report-not-run", ("report", "{tmp}/d"), "d: not a run folder", files={"d/x": "1"}),
    # ---- through the real console script (a fresh interpreter: argparse, import errors, exit code)
    Case("console-profile-not-utf8", ("profile", "--task", TASK, "--hw", "{tmp}/p.yaml"), "p.yaml: not UTF-8",
         {"p.yaml": NOT_UTF8}, subprocess=True),
    Case("console-search-flag", CONSOLE_SEARCH + ("--trials", "many", "--out", "{tmp}/out"),
         "argument --trials: invalid int value: 'many'", subprocess=True),
    Case("console-search-corrupt-storage",
         CONSOLE_SEARCH + ("--storage", "sqlite:///{tmp}/bad.db", "--out", "{tmp}/out"),
         "bad.db: not a readable study database", {"bad.db": "not a database " * 100}, subprocess=True),
    Case("console-search-out-file", CONSOLE_SEARCH + ("--out", "{tmp}/f"), "f: exists and is not a folder", {"f": "x"},
         subprocess=True),
    Case("console-space-ignore-str", ("inspect", "--task", TASK, "--space", "{tmp}/s.yaml"),
         "`ignore` must be a list of layer-name globs", {"s.yaml": "name: s\nignore: 'stem.*'\n"}, subprocess=True),
    Case("console-storage", CONSOLE_SEARCH + ("--storage", "notadb://x", "--out", "{tmp}/out"), "--storage notadb://x",
         subprocess=True),
    Case("console-unknown-command", ("serve",), "argument COMMAND: invalid choice: 'serve'", subprocess=True),
]
