from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autoprune.cli import build_parser, main
from tests.conftest import ROOT

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


#: runs ``autoprune ARGS --help`` for every subcommand in one fresh interpreter, then prints the exit codes
#: and which heavy libraries were imported
HELP_PROBE = """
import json, runpy, sys
codes = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["autoprune", *args]
    try:
        runpy.run_module("autoprune", run_name="__main__")
    except SystemExit as exit:
        codes.append(exit.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "ray", "tvm", "onnxruntime", "optuna"})
print(json.dumps({"codes": codes, "heavy": heavy}), file=sys.stderr)
"""


def test_help_imports_no_heavy_library() -> None:
    commands = [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS]
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, json.dumps(commands)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.count("usage: autoprune") == len(commands)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"codes": [0] * len(commands), "heavy": []}


@pytest.mark.parametrize("args, message", [
    (["search", "--out", "x", "--agent", "bogus"],
     "`agent` must be one of global, nsga2, random, rl, tpe, uniform, got 'bogus'"),
    (["search", "--out", "x", "--task", "nosuch"], "unknown task 'nosuch'"),
    (["search", "--out", "x", "--hw", "missing.yaml"], "missing.yaml: file not found"),
    (["search", "--out", "x", "--trials", "0"], "`trials` must be an integer >= 1, got 0"),
    (["search", "--out", "x", "--predictor-margin", "2"],
     "`predictor_margin` must be a number in [0.0, 0.99], got 2.0"),
    (["search", "--out", "x", "--task", "tests.tiny_task:tiny_task", "--predictor", "missing.json"],
     "missing.json: file not found"),
    (["profile", "--task", "tests.tiny_task:nope"], "has no callable 'nope'"),
    (["search", "--out", "x", "--task", "tests.tiny_task:tiny_task", "--hw", str(ROOT / "hw_profiles/cpu-torch.yaml"),
      "--space", str(ROOT / "search_spaces/prune-and-quantize.yaml")],
     "search space prune-and-quantize: `precisions` lists int8, which hardware profile cpu-torch (backend torch, cpu) "
     "cannot run; it runs fp32"),
])
def test_user_errors_are_one_line_exit_2(args, message, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoprune: error: ") and message in err and "\n" not in err


def test_profile_prints_latency(capsys) -> None:
    assert main(["profile", "--task", "tests.tiny_task:tiny_task", "--hw",
                 str(ROOT / "hw_profiles/cpu-onnxruntime.yaml")]) == 0
    out = capsys.readouterr().out
    assert "p50 ms" in out and "onnxruntime" in out


def test_a_predictor_path_in_a_config_file_is_relative_to_it(tmp_path) -> None:
    from autoprune.cli import _search_config

    (tmp_path / "c.yaml").write_text(f"profile: {ROOT / 'hw_profiles/cpu-onnxruntime.yaml'}\npredictor: p.json\n")
    args = build_parser().parse_args(["search", "--out", "x", "--config", str(tmp_path / "c.yaml")])
    assert _search_config(args).predictor == str(tmp_path / "p.json")
    flagged = build_parser().parse_args(["search", "--out", "x", "--config", str(tmp_path / "c.yaml"),
                                         "--predictor", "off", "--predictor-margin", "0.3"])
    assert (_search_config(flagged).predictor, _search_config(flagged).predictor_margin) == ("off", 0.3)


def test_profile_warns_when_cv_stays_above_the_profiles_limit(tmp_path, capsys) -> None:
    (tmp_path / "p.yaml").write_text("name: strict\nbackend: onnxruntime\nwarmup_s: 0.01\nmin_runs: 20\nrepeats: 2\n"
                                     "max_cv: 0.0\nmax_remeasure: 0\n")
    assert main(["profile", "--task", "tests.tiny_task:tiny_task", "--hw", str(tmp_path / "p.yaml")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autoprune: warning: CV ") and "above the profile's max_cv 0%" in err[0]
