"""Real Redis Clusters on loopback for tests: ``redis-server --cluster-enabled yes`` nodes, every
process ours, on free ports (the cluster bus port is chosen free too, with ``cluster-port``,
instead of assuming that port + 10000 is).

:class:`RedisClusterSet`: 3 masters with or without a replica each, joined by
``redis-cli --cluster create``; ``migrate_slot`` moves one slot between masters the way
``redis-cli --cluster reshard`` does, in small batches, so a test can run jobs across a reshard.

:class:`ThreeMasterCluster`: 3 masters, no replicas, with :class:`~tests.servers.RedisServer`'s
interface: what the suites marked ``cluster_too`` run on in cluster mode (tests/conftest.py).
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
from redis.crc import key_slot

from tests.servers import TAG, RedisServer, free_port, wait_until


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed"
    return path


class ClusterNode:
    """One cluster-enabled redis-server (AOF everysec by default, as the chaos issue runs Redis).
    Its nodes.conf and AOF are in its own directory, so a killed node started again on the same
    ports rejoins the cluster as the node it was."""

    def __init__(self, root: Path, appendonly: bool = True, appendfsync: str = "everysec",
                 node_timeout_ms: int = 2000, taken: set[int] | None = None) -> None:
        taken = taken if taken is not None else set()
        self.port = _distinct_free_port(taken)
        self.bus_port = _distinct_free_port(taken)
        self.dir = root / str(self.port)
        self.dir.mkdir()
        self.appendonly, self.appendfsync, self.node_timeout_ms = appendonly, appendfsync, node_timeout_ms
        self.proc: subprocess.Popen | None = None

    def launch(self) -> ClusterNode:
        """Start the process without waiting for it (:meth:`wait_ready`): nodes start side by side."""
        args = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms), "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def wait_ready(self) -> ClusterNode:
        wait_until(lambda: self.ping(), timeout=10, interval=0.02, message=f"cluster node on {self.port}")
        return self

    def start(self) -> ClusterNode:
        return self.launch().wait_ready()

    def ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_connect_timeout=0.3, socket_timeout=0.5) as probe:
                return bool(probe.ping())
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


def _distinct_free_port(taken: set[int]) -> int:
    """A free port not handed out already to another node of the same cluster (two calls of
    free_port may return the same port, since nothing holds it in between)."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


class RedisClusterSet:
    """``masters`` masters (3 by default), each with ``replicas`` replicas, joined into one cluster."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fikiri-cluster-"))
        self.masters_wanted, self.replicas = masters, replicas
        taken: set[int] = set()
        self.nodes = [ClusterNode(self.dir, taken=taken) for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        """Any node's URL: a cluster client discovers the rest (REDIS_URL in cluster mode, issue 25)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterSet:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
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


class ThreeMasterCluster(RedisServer):
    """A 3-master cluster (no replicas) with RedisServer's interface (url, client, stop, start,
    restart, cleanup, appendonly/appendfsync): what the lifecycle, flow-control, workflow and
    fallback suites run on in cluster mode (``@pytest.mark.cluster_too``, tests/conftest.py).

    The slots are split in three as ``redis-cli --cluster create`` splits them; ``{fikiri}``'s slot
    (13018) is on the third master. ``url`` names another master, so every client finds the slot's
    master through ``CLUSTER SLOTS`` as it would in production; ``client()`` is a plain connection
    to the slot's master (where every key of ours and of the tests lives), and ``stop``/``start``/
    ``restart`` act on that master: with no replica the slot is then unserved, which is "Redis is
    down" to every client, and the master started again rejoins from its nodes.conf (and AOF, when
    ``appendonly``). Every key must carry the tag, the tests' own too (tests/servers.py ``tkey``):
    a key of another slot is on another master and a client pinned to ours gets ``MOVED``.

    Start-up: the nodes start side by side and are joined by hand (config epochs, slot ranges,
    ``CLUSTER MEET``) instead of by ``redis-cli --cluster create``, which polls once a second; a
    node serves no key before ~2 s after its start whatever we do (Redis's writable delay)."""

    MASTERS = 3

    def __init__(self, appendonly: bool = False, appendfsync: str = "always", node_timeout_ms: int = 2000) -> None:
        self.appendonly, self.appendfsync = appendonly, appendfsync
        self.dir = tempfile.mkdtemp(prefix="fikiri-cluster-")
        taken: set[int] = set()
        self.nodes = [ClusterNode(Path(self.dir), appendonly, appendfsync, node_timeout_ms, taken)
                      for _ in range(self.MASTERS)]
        self.ranges = _split_slots(self.MASTERS)
        slot = key_slot(TAG.encode())
        self.master = next(node for node, (lo, hi) in zip(self.nodes, self.ranges) if lo <= slot <= hi)
        self.seed = next(node for node in self.nodes if node is not self.master)  # REDIS_URL: not the master
        self.port = self.seed.port
        self.joined = False

    @property
    def url(self) -> str:
        """A node that is not the slot's master: clients must discover it (REDIS_URL names any node)."""
        return f"redis://127.0.0.1:{self.seed.port}/0"

    @property
    def proc(self) -> subprocess.Popen | None:  # type: ignore[override]
        """The slot master's process (RedisServer.proc): None while it is stopped."""
        return self.master.proc

    @proc.setter
    def proc(self, value: subprocess.Popen | None) -> None:
        self.master.proc = value

    def start(self) -> ThreeMasterCluster:
        """The first time: every node, joined into one cluster. Later: the nodes stopped since
        (the slot's master), back from their nodes.conf. Returns once every node reports
        cluster_state:ok (a restarted master refuses keys for ~2 s; the others call the cluster
        down until they have seen it back)."""
        stopped = [node for node in self.nodes if node.proc is None]
        for node in stopped:
            node.launch()
        for node in stopped:
            node.wait_ready()
        if not self.joined:
            self._join()
            self.joined = True
        wait_until(self.healthy, timeout=30, interval=0.05,
                   message="every node of the 3-master cluster to report cluster_state:ok")
        return self

    def _join(self) -> None:
        for epoch, (node, (lo, hi)) in enumerate(zip(self.nodes, self.ranges), start=1):
            with node.client() as client:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)  # distinct: no epoch collision to settle
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        with self.nodes[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)

    def healthy(self) -> bool:
        """Every node answers, knows the other two and reports cluster_state:ok."""
        for node in self.nodes:
            try:
                with node.client() as client:
                    info = client.cluster("info")
            except (redis.RedisError, OSError):
                return False
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                return False
        return True

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the slot's master: the slot has no one to serve it (no replica), Redis is down."""
        self.master.kill(sig)

    def client(self) -> redis.Redis:
        """A plain client to the slot's master (not a cluster client: every key we read is there)."""
        return redis.Redis(host="127.0.0.1", port=self.master.port)

    def running_masters(self) -> list[ClusterNode]:
        """The masters not stopped (all three are masters: there are no replicas to promote)."""
        return [node for node in self.nodes if node.proc is not None]

    def all_keys(self) -> list[str]:
        """Every key on every running master (a stopped one cannot be asked)."""
        names: list[str] = []
        for node in self.running_masters():
            with node.client() as client:
                names.extend(k.decode() for k in client.scan_iter(count=1000))
        return names

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _split_slots(masters: int) -> list[tuple[int, int]]:
    """The 16,384 slots in ``masters`` ranges, as ``redis-cli --cluster create`` splits them."""
    per = 16384 / masters
    return [(round(i * per), round((i + 1) * per) - 1) for i in range(masters)]
