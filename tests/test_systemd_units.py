"""The systemd units: the settings that make `systemctl stop` a warm shutdown, and
`systemd-analyze verify` on each unit installed at this checkout's path."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from core.config import get_settings
from tests.servers import ROOT

UNITS = sorted(ROOT.glob("fikiri-*.service"))


def parse(unit: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(unit)
    return parser


def test_the_worker_unit_exists():
    assert ROOT / "fikiri-rq-worker.service" in UNITS


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_settings(unit):
    service = parse(unit)["Service"]
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process only: a warm stop
    assert service["Restart"] == "always"
    assert service["User"] not in ("", "root")
    assert service["EnvironmentFile"].startswith("-")
    longest_job = max(get_settings().timeout_for(q) for q in ("email", "ai", "crm"))
    assert int(service["TimeoutStopSec"]) > longest_job


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here (Debian package: systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit, tmp_path):
    installed = tmp_path / unit.name
    installed.write_text(unit.read_text().replace("/opt/fikiri-jobs", str(ROOT)))
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv in this checkout: the unit's ExecStart would point at nothing")
    proc = subprocess.run(["systemd-analyze", "verify", str(installed)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
