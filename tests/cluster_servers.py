"""A real Redis Cluster on loopback for tests: ``redis-server --cluster-enabled yes`` nodes joined
by ``redis-cli --cluster create``, 3 masters with or without a replica each. Every process is ours,
on free ports (the cluster bus port is chosen free too, with ``cluster-port``, instead of assuming
that port + 10000 is). ``migrate_slot`` moves one slot between masters the way
``redis-cli --cluster reshard`` does, in small batches, so a test can run jobs across a reshard.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from tests.servers import RedisServer, free_port, wait_until


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed"
    return path


class ClusterNode:
    """One cluster-enabled redis-server (AOF everysec, as the chaos issue runs Redis)."""

    def __init__(self, root: Path) -> None:
        self.port, self.bus_port = free_port(), free_port()
        self.dir = root / str(self.port)
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClusterNode:
        args = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf"), "--cluster-node-timeout", "2000",
                "--dir", str(self.dir), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.ping(), timeout=10, message=f"cluster node on {self.port}")
        return self

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.3, socket_timeout=0.5).ping())
        except (redis.RedisError, OSError):
            return False

    def client(self) -> redis.Redis:
        """A plain connection to this node alone (CLUSTER commands, INFO replication)."""
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


class RedisClusterSet:
    """``masters`` masters (3 by default), each with ``replicas`` replicas, joined into one cluster."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fikiri-cluster-"))
        self.masters_wanted, self.replicas = masters, replicas
        self.nodes = [ClusterNode(self.dir) for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        """Any node's URL: a cluster client discovers the rest (REDIS_URL in cluster mode, issue 25)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        create = [_binary("redis-cli"), "--cluster", "create",
                  *(f"127.0.0.1:{node.port}" for node in self.nodes),
                  "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        wait_until(self._healthy, timeout=30, message="the cluster to report cluster_state:ok on every node")
        return self

    def _healthy(self) -> bool:
        for node in self.nodes:
            try:
                info = node.client().cluster("info")
            except (redis.RedisError, OSError):
                return False
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return all(self._replicas_online(node) >= self.replicas for node in self.masters())

    @staticmethod
    def _replicas_online(node: ClusterNode) -> int:
        """Replicas in sync with ``node`` (state=online): before that, WAIT 1 answers 0."""
        info = node.client().info("replication")
        return sum(1 for key, value in info.items()
                   if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=2)

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now (a failover changes which)."""
        return [node for node in self.nodes if node.proc is not None and self._role(node) == "master"]

    @staticmethod
    def _role(node: ClusterNode) -> str:
        try:
            return str(node.client().info("replication").get("role"))
        except (redis.RedisError, OSError):
            return "down"

    def node_for(self, key: str) -> ClusterNode:
        """The master serving ``key``'s slot now, as the cluster's own slot map says."""
        slot = self.client().keyslot(key)
        live = next(node for node in self.nodes if node.proc is not None and node.ping())
        for start, end, master, *_replicas in live.client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise AssertionError(f"no master serves slot {slot} of {key!r}")

    def node_id(self, node: ClusterNode) -> str:
        return node.client().execute_command("CLUSTER", "MYID").decode()

    def migrate_slot(self, slot: int, target: ClusterNode, batch: int = 10, pause: float = 0.0) -> int:
        """Move ``slot`` from its master to ``target`` as ``redis-cli --cluster reshard`` does:
        IMPORTING on the target, MIGRATING on the source, ``MIGRATE`` of ``batch`` keys at a time
        (``pause`` seconds between batches stretches the window in which clients meet ASK), then
        the new owner announced to every master. Returns how many keys moved."""
        source = self.begin_move(slot, target)
        moved = self.move_keys(slot, source, target, batch, pause)
        self.end_move(slot, source, target)
        return moved

    def begin_move(self, slot: int, target: ClusterNode) -> ClusterNode:
        """IMPORTING on ``target``, MIGRATING on the slot's master (returned): from here the source
        answers ASK for any key of the slot it does not hold."""
        source = next(node for node in self.masters()
                      if any(start <= slot <= end and int(master[1]) == node.port
                             for start, end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS")))
        assert source.port != target.port, "the slot is already on the target"
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    @staticmethod
    def move_keys(slot: int, source: ClusterNode, target: ClusterNode, batch: int = 10, pause: float = 0.0,
                  names: list[str] | None = None) -> int:
        """``MIGRATE`` the slot's keys (or only ``names``) from ``source`` to ``target``."""
        if names is not None:
            source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *names)
            return len(names)
        moved = 0
        while found := source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *found)
            moved += len(found)
            if pause:
                time.sleep(pause)
        return moved

    def end_move(self, slot: int, source: ClusterNode, target: ClusterNode) -> None:
        """The new owner announced to the target, the source, then every other master."""
        target_id = self.node_id(target)
        for node in (target, source, *(n for n in self.masters() if n.port not in (source.port, target.port))):
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class OneNodeCluster(RedisServer):
    """A cluster-mode redis-server that serves all 16,384 slots by itself, with RedisServer's
    interface (url, client, restart, stop, cleanup): what the lifecycle, flow-control, workflow and
    fallback suites run on in cluster mode (``@pytest.mark.cluster_too``). Our keys carry the
    ``{fikiri}`` tag; the tests' own keys (``test:...``) need none here, since one node owns every
    slot, so the suites run unchanged. A multi-key command or script over keys of different slots is
    still refused (CROSSSLOT), and the fixture checks after each test that every key our code wrote
    carries the tag (tests/conftest.py)."""

    def start(self) -> OneNodeCluster:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs it)"
        if not hasattr(self, "bus_port"):
            self.bus_port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: self._ping(client), timeout=10, message=f"cluster-mode redis-server on {self.port}")
        if int(client.cluster("info").get("cluster_slots_assigned", 0)) == 0:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_until(lambda: client.cluster("info").get("cluster_state") == "ok", timeout=10,
                   message="the one-node cluster to report cluster_state:ok")
        client.close()
        return self
