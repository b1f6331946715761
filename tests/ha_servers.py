"""Real Redis topologies for tests: a master, a replica and three sentinels on loopback, and a
TLS redis-server with a CA made for the test (openssl). Every process is ours, on free ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.servers import free_port, wait_until

MASTER_NAME = "fikirimaster"


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    return binary


class Proc:
    """A redis-server (or sentinel) process started from a config file."""

    def __init__(self, conf: Path, sentinel: bool = False) -> None:
        args = [_redis_server(), str(conf), *(["--sentinel"] if sentinel else [])]
        self.log = conf.with_suffix(".log")
        self.proc = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


def _ping(port: int, **kwargs: object) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.5, **kwargs).ping())
    except (redis.RedisError, OSError):
        return False


class SentinelSet:
    """Master (AOF, fsync always) + one replica + three sentinels (quorum 2)."""

    def __init__(self, down_after_ms: int = 2000, password: str = "", sentinel_password: str = "") -> None:
        self.password, self.sentinel_password = password, sentinel_password
        self.dir = Path(tempfile.mkdtemp(prefix="fikiri-sentinel-"))
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.down_after_ms = down_after_ms
        self.procs: dict[str, Proc] = {}

    def _data_conf(self, name: str, port: int, replica_of: int | None) -> Path:
        data = self.dir / name
        data.mkdir()
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {data}", "save ''", "appendonly yes",
                 "appendfsync always", "loglevel notice", "repl-diskless-sync no"]
        if replica_of:
            lines.append(f"replicaof 127.0.0.1 {replica_of}")
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        conf = self.dir / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> SentinelSet:
        self.procs["master"] = Proc(self._data_conf("master", self.master_port, None))
        wait_until(lambda: _ping(self.master_port, password=self.password or None), timeout=15, message="master")
        self.procs["replica"] = Proc(self._data_conf("replica", self.replica_port, self.master_port))
        wait_until(self.replica_synced, timeout=30, message="replica in sync")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel{i}.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                *([f"sentinel auth-pass {MASTER_NAME} {self.password}"] if self.password else []),
                *([f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
                  if self.sentinel_password else []),
            ]) + "\n")
            self.procs[f"sentinel{i}"] = Proc(conf, sentinel=True)
        wait_until(self.sentinels_ready, timeout=60, interval=0.2, message="sentinels to see each other and the replica")
        return self

    def replica_synced(self) -> bool:
        try:
            info = redis.Redis(port=self.replica_port, socket_timeout=0.5,
                               password=self.password or None).info("replication")
        except (redis.RedisError, OSError):
            return False
        return info.get("master_link_status") == "up"

    def sentinel(self, i: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[i], socket_timeout=1, decode_responses=True,
                           password=self.sentinel_password or None)

    def sentinels_ready(self) -> bool:
        for i in range(3):
            try:
                client = self.sentinel(i)
                if len(client.sentinel_slaves(MASTER_NAME)) < 1 or len(client.sentinel_sentinels(MASTER_NAME)) < 2:
                    return False
            except (redis.RedisError, OSError):
                return False
        return True

    def master_port_now(self) -> int:
        return int(self.sentinel(0).sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        credentials = f":{self.password}@" if self.password else ""
        return {"REDIS_SENTINELS": self.sentinels_setting, "REDIS_SENTINEL_MASTER": MASTER_NAME,
                "REDIS_URL": f"redis://{credentials}sentinel-managed/0",
                **({"REDIS_SENTINEL_PASSWORD": self.sentinel_password} if self.sentinel_password else {})}

    def cleanup(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_ca_and_server_cert(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, by openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=fikiri-test-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=fikiri-test-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *(["-extfile", "san.ext"] if name == "server" else []))
    return {n: directory / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def redis_has_tls() -> bool:
    """A redis-server built without TLS answers the tls-* directives with 'Bad directive'."""
    proc = subprocess.run([_redis_server(), "--port", "0", "--tls-port", "0", "--bind", "127.0.0.1",
                           "--tls-cert-file", "/nonexistent", "--tls-key-file", "/nonexistent"],
                          capture_output=True, text=True, timeout=30)
    return "Bad directive" not in proc.stdout + proc.stderr


class TlsRedis:
    """redis-server with only a TLS port, client certificates required."""

    def __init__(self, certs: dict[str, Path]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fikiri-tls-"))
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            "port 0", f"tls-port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", "save ''",
            f"tls-cert-file {certs['server.crt']}", f"tls-key-file {certs['server.key']}",
            f"tls-ca-cert-file {certs['ca.crt']}", "tls-auth-clients yes",
        ]) + "\n")
        self.proc = Proc(conf)
        self.certs = certs
        deadline = time.monotonic() + 15
        while not self._ping():
            if self.proc.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"TLS redis-server did not start: {self.proc.log.read_text()[-1500:]}")
            time.sleep(0.05)

    def _ping(self) -> bool:
        return _ping(self.port, ssl=True, ssl_ca_certs=str(self.certs["ca.crt"]),
                     ssl_certfile=str(self.certs["client.crt"]), ssl_keyfile=str(self.certs["client.key"]))

    def cleanup(self) -> None:
        self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
