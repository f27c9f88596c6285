from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.files import size_text
from autoprune.records import TrialRecord, TrialState
from autoprune.results.report import FRONT_COLOUR, write_report
from autoprune.results.run import load_run

CHROMIUM = "/usr/bin/chromium"


def test_report_is_one_offline_file_with_plots_and_tables(tiny_run: Path, capsys) -> None:
    assert main(["report", str(tiny_run)]) == 0
    assert str(tiny_run / "report.html") in capsys.readouterr().out
    page = (tiny_run / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "http" not in page  # nothing to fetch
    assert page.count('src="data:image/png;base64,') == 3 and "<style>" in page
    data = load_run(tiny_run)
    for r in data.front:
        assert f'<tr class="front"><td>{r.number}</td><td>{100 * r.accuracy:.2f}</td>' in page
        assert f'<td>{100 * r.test_accuracy:.2f}</td>' in page  # the held-out test score
        assert f"<td>{size_text(r.size_bytes)}</td><td>{size_text(r.compressed_bytes)}</td>" in page  # on disk
    assert "<th>gzip&#x27;d</th>" in page and f"<td>{size_text(data.dense.compressed_bytes)}</td>" in page
    for name in ("pareto", "hypervolume", "ratios"):
        assert (tiny_run / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rejected_and_failed_trials_are_shown_apart(tiny_run: Path, tmp_path: Path) -> None:
    data = load_run(tiny_run)
    lat = data.records[0].latency
    rejected = TrialRecord(number=90, plan={}, state=TrialState.REJECTED,
                           reason="not faster than dense: speed-up 0.90x",
                           latency=lat, dense_latency=lat, speedup=0.9)
    failed = TrialRecord(number=91, plan={}, state=TrialState.FAILED, reason="PlanError: group 'x' is broken")
    run = dataclasses.replace(data.run, path=tmp_path)
    report = write_report(dataclasses.replace(data, run=run, records=data.records + [rejected, failed]))
    page = report.html.read_text()
    assert "1 rejected, 1 failed" in page
    assert "<td>90</td><td class=\"l\">rejected</td>" in page and "PlanError: group &#x27;x&#x27; is broken" in page


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (make chromium)")
def test_report_renders_in_headless_chromium(tiny_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from matplotlib.image import imread

    write_report(load_run(tiny_run))
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1000",
           (tiny_run / "report.html").resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = (imread(shot)[..., :3] * 255).astype(int)
    assert pixels.shape[:2] == (1000, 1200)
    plot = pixels[150:800]  # the Pareto plot is the first figure under the heading
    front = np.array([int(FRONT_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    front_pixels = int((np.abs(plot - front).max(axis=-1) <= 12).sum())
    colours = len(np.unique(plot.reshape(-1, 3), axis=0))
    assert front_pixels > 300, f"the Pareto front line is not drawn ({front_pixels} front-coloured pixels)"
    assert colours > 50, f"the plot region is nearly blank ({colours} colours)"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_the_console_front_table_shows_plain_and_gzipd_sizes(tiny_run: Path) -> None:
    from rich.console import Console

    from autoprune.console import pareto_table

    data = load_run(tiny_run)
    console = Console(width=250, record=True)
    console.print(pareto_table(data.dense, data.front))
    text = console.export_text()
    assert "gzip'd" in text and size_text(data.dense.size_bytes) in text
    assert all(size_text(r.compressed_bytes) in text for r in data.front)
