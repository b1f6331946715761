"""``fikiri-worker --processes N`` under systemd: a stop is a clean exit, whenever it comes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.servers import ROOT, worker_env


def test_a_sigterm_while_the_children_start_exits_0(jobs_env):
    """A child stopped by the forwarded SIGTERM before it installed its handlers has no job in
    hand; the supervisor used to return its -15, exit 241, and systemd marked the unit failed.
    A supervisor killed by the signal before it installed its own handler (-15) is a clean stop
    for systemd; an exit status of 241 is not."""
    codes = {}
    for delay in (0.1, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.9):  # before, while and after the children start
        proc = subprocess.Popen([sys.executable, "scripts/rq_worker.py", "crm", "--processes", "2",
                                 "--worker-class", "simple"], cwd=ROOT, env=worker_env(jobs_env.url),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        codes[delay] = proc.wait(timeout=60)
    assert set(codes.values()) <= {0, -signal.SIGTERM}, codes
