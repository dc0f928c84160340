"""The command line: JSON out, exit codes, progress on stderr, clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_synth_manifest_only_writes_table2_proportions(tmp_path):
    result = run_cli(
        "synth", "--preset", "paper", "--scale", "0.1", "--seed", "4", "--out", str(tmp_path), "--manifest-only"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert summary["n_cases"] == len(rows) and not summary["rendered"]
    assert rows[0].keys() >= {"patient_id", "hospital", "split", "t1", "t1c", "t2", "flair", "seg"}
    # Scale 0.1 of hospital 6's T2+FLAIR cell (130) is 13 cases, with empty t2 and flair paths.
    h6 = [r for r in rows if r["hospital"] == "6" and r["missing"] == "t2+flair"]
    assert len(h6) == 13 and all(r["t2"] == "" and r["flair"] == "" and r["t1c"] for r in h6)
    assert {r["hospital"] for r in rows} == {"public", "1", "2", "3", "4", "5", "6"}
    assert "synth" in result.stderr  # the progress bar


@pytest.mark.slow
def test_synth_renders_a_case_with_preview_and_inspect_accepts_it(tmp_path):
    preview = tmp_path / "preview.png"
    result = run_cli("synth", "--scale", "0.05", "--out", str(tmp_path / "c"), "--patients", "SYN_H3_0001",
                     "--preview", str(preview))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(run_cli("inspect", str(tmp_path / "c" / "manifest.csv")).stdout)
    assert report["ok"] and report["n_accepted"] == 1


def test_inspect_reports_rejections_with_exit_code_1(tmp_path, write_case):
    write_case("fine")
    bad, _, _ = write_case("broken", missing=("t1c",))
    result = run_cli("inspect", str(bad.parent))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    reasons = {c["case_id"]: c.get("reasons") for c in report["cases"]}
    assert reasons["fine"] is None and "T1c is missing" in reasons["broken"][0]


def test_bad_arguments_give_one_line_errors(tmp_path):
    result = run_cli("synth", "--preset", "nope", "--out", str(tmp_path), "--manifest-only")
    assert result.returncode == 2 and "unknown preset 'nope'" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("synth", "--out", str(tmp_path), "--patients", "SYN_H9_0001")
    assert result.returncode == 2 and "SYN_H9_0001" in result.stderr
    result = run_cli("inspect", str(tmp_path / "absent"))
    assert json.loads(result.stdout)["error"].endswith("no such file or folder")
