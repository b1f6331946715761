"""The API under a real WSGI server on loopback: gunicorn as a subprocess, as in production."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.servers import ROOT, free_port, wait_until, worker_env


class ApiServer:
    """``gunicorn 'app:create_app()'`` on a free loopback port."""

    def __init__(self, redis_url: str, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             "--threads", "4", "--timeout", "30", "app:create_app()"],
            cwd=str(ROOT), env=worker_env(redis_url, env), stdout=self._log, stderr=subprocess.STDOUT,
        )
        wait_until(self._up, timeout=30, message="gunicorn to answer")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
        try:
            return requests.get(self.base + "/api/jobs/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
