"""The systemd units: the settings that make `systemctl stop` a warm shutdown,
`systemd-analyze verify` on each unit installed at this checkout's path, and the sandbox that
`systemd-analyze security` rates at most 3.0 for each."""

from __future__ import annotations

import configparser
import re
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


def test_the_worker_scheduler_and_api_units_exist():
    # the design card's plain worker unit (`systemctl enable --now fikiri-rq-worker`,
    # `journalctl -u fikiri-rq-worker`) and the template for several (`fikiri-rq-worker@2`)
    assert [u.name for u in UNITS] == ["fikiri-api.service", "fikiri-rq-scheduler.service",
                                       "fikiri-rq-worker.service", "fikiri-rq-worker@.service"]


def test_the_plain_worker_unit_runs_what_the_template_runs():
    """One worker without an instance name: the same settings and sandbox as the template, line
    for line (repeated keys such as SystemCallFilter included), so the two cannot drift apart."""
    def body(unit: Path) -> list[str]:
        text = unit.read_text().split("\n[Unit]\n", 1)[1]  # the comment header differs
        return [line for line in text.splitlines() if not line.startswith("Description=")]

    plain, template = ROOT / "fikiri-rq-worker.service", ROOT / "fikiri-rq-worker@.service"
    assert "%i" not in plain.read_text() and "%i" in template.read_text()
    assert parse(plain)["Service"]["ExecStart"].split()[1:] == ["-m", "scripts.rq_worker"]
    assert body(plain) == body(template)


def installed(unit: Path, directory: Path) -> Path:
    """The unit as it would be installed at this checkout (a template as its instance @1)."""
    path = directory / unit.name.replace("@.service", "@1.service")
    path.write_text(unit.read_text().replace("/opt/fikiri-jobs", str(ROOT)))
    return path


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_settings(unit):
    service = parse(unit)["Service"]
    assert service["KillMode"] == "mixed"  # SIGTERM to the main process only: a warm stop
    assert service["Restart"] == "always"
    assert service["User"] not in ("", "root")
    assert service["EnvironmentFile"].startswith("-")
    longest_job = max(get_settings().timeout_for(q) for q in ("email", "ai", "crm"))
    assert int(service["TimeoutStopSec"]) > longest_job
    if unit.name.startswith("fikiri-rq-worker"):  # the shutdown deadline, then the interrupt's grace
        from core.worker.executors import SHUTDOWN_GRACE

        assert int(service["TimeoutStopSec"]) > get_settings().worker_shutdown_timeout + SHUTDOWN_GRACE
    # `systemctl enable` needs an [Install] section; `journalctl -u <unit>` reads what systemd
    # collects from stdout/stderr, so neither is sent elsewhere
    assert parse(unit)["Install"]["WantedBy"] == "multi-user.target"
    assert not {"StandardOutput", "StandardError"} & set(service)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here (Debian package: systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit, tmp_path):
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists():
        pytest.skip("no .venv in this checkout: the unit's ExecStart would point at nothing")
    proc = subprocess.run(["systemd-analyze", "verify", str(installed(unit, tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fikiri" not in proc.stderr, proc.stderr  # no warnings about our unit either


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here (Debian package: systemd)")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_security_rates_each_unit_at_most_3(unit, tmp_path):
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(installed(unit, tmp_path))], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 3.0, proc.stdout
