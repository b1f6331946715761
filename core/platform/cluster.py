"""Cluster mode (``REDIS_CLUSTER=1``): every key in one hash slot, a client pinned to its master.

Why one slot: every lifecycle script touches a job's hash, its queue's lists and registries, the
counters and the events stream together (docs/CLUSTER.md). Under one hash tag, ``{<prefix>}``
(``{fikiri}`` by default, core/platform/keys.py puts it on every key), all of them live on one
master, so the scripts run unchanged and stay atomic. It is what a cluster-mode-only Redis
(ElastiCache Serverless, a Valkey cluster) needs to run us at all; it does not spread one
installation's load over several masters (one slot per queue and shards are the next steps).

Why not redis-py's ``RedisCluster``: with every key on one master, the commands that name no key
must go there too, and ``RedisCluster`` routes them elsewhere: ``WAIT`` (durable acknowledgements
must wait on the master that took the write), ``INFO``, ``TIME`` (the lifecycle's clock),
``SCRIPT LOAD``. So the client is a plain ``redis.Redis`` whose connections look up the master of
the slot (``CLUSTER SLOTS`` on any seed node) each time they connect, as a Sentinel-managed
connection looks its master up. After a failover the old socket fails or the old master answers
``MOVED``/``READONLY``/``CLUSTERDOWN``/``TRYAGAIN``: the connection drops itself and raises
``ConnectionError``, the one "Redis is down" every caller already rides out; its next connect
finds the promoted replica.

A reshard moves the slot key by key (``MIGRATE``); meanwhile the old master answers ``ASK`` for a
key it no longer has, and a script that met one half-way would stop after its earlier writes
(scripts do not roll back): a claim that popped an id and could not read its job. So in cluster
mode every script lists a never-written key of our slot in ``KEYS`` (core/queue/lua_scripts.py
``declared``), and every pipeline is a ``MULTI``/``EXEC`` transaction (:class:`SlotRedis`):
Redis checks the keys of both before running anything, and while the slot migrates it refuses
them whole (``ASK``/``TRYAGAIN``). Those answers, and the ``MOVED`` that ends a move, raise
:class:`SlotMoving`; :class:`SlotMoveRetry` sends the call again for up to
``JOBS_CLUSTER_MOVE_WAIT`` seconds, after which it is a lost connection like any other.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.crc import key_slot
from redis.retry import Retry

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Answers of a node that no longer serves our slot: a failover moved it (or the cluster is down).
_MOVED_AWAY = (redis.exceptions.ClusterDownError, redis.exceptions.ReadOnlyError)
MOVE_PAUSE_MAX = 0.1  # s: the longest pause between two tries while the slot migrates
# Script texts a connection loads on a master it reaches anew (core/queue/lua_scripts.py registers ours).
_PRELOAD: list[str] = []


def preload_on_new_master(sources: list[str]) -> None:
    """Scripts a connection loads when it reconnects to a different master (a failover, a reshard).
    redis-py loads a pipeline's scripts on the master it first goes to; sent again after ``MOVED``,
    the pipeline would meet ``NOSCRIPT`` on the new one (a worker's heartbeat thread died of it
    after a reshard, bench.cluster_reshard)."""
    _PRELOAD[:] = sources


class SlotMoving(redis.ConnectionError):
    """Our slot is being moved to another master (a reshard): the call was refused whole, nothing
    of it ran; it is sent again until ``JOBS_CLUSTER_MOVE_WAIT`` runs out. ``moved``: the answer
    was the ``MOVED`` that ends a move (send it again at once, to the new master)."""

    def __init__(self, message: str, moved: bool = False) -> None:
        super().__init__(message)
        self.moved = moved


class SlotMoveRetry(Retry):
    """No retry for a lost connection (the callers ride those out, as before); a call refused
    because the slot migrates is sent again, with pauses growing from 10 ms to 100 ms, and at once
    after the first ``MOVED`` that ends the move, until ``wait`` seconds have passed since the first
    refusal. (Pauses of up to 200 ms kept callers waiting 0.2–0.4 s after a move had ended,
    bench.cluster_reshard.)"""

    def __init__(self, wait: float) -> None:
        super().__init__(NoBackoff(), 0)
        self.wait = wait

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any], is_retryable: Any = None,
                        with_failure_count: bool = False) -> T:
        deadline, pause, moved_before = None, 0.01, False
        while True:
            try:
                return super().call_with_retry(do, fail, is_retryable, with_failure_count)
            except SlotMoving as refused:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.wait
                if now >= deadline:
                    raise
                if not refused.moved or moved_before:  # a second MOVED: the nodes do not agree yet
                    time.sleep(min(pause, deadline - now))
                    pause = min(pause * 2, MOVE_PAUSE_MAX)
                moved_before = refused.moved


class SlotRedis(redis.Redis):
    """The cluster-mode client: every pipeline is a transaction. A plain pipeline refused half-way
    by a migrating slot would leave its first commands applied, and sending it again would apply
    them twice; ``EXEC`` is checked whole, so a refused transaction ran nothing."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> redis.client.Pipeline:
        return super().pipeline(transaction=True, shard_hint=shard_hint)


def plain_pipeline(client: redis.Redis) -> redis.client.Pipeline:
    """A pipeline that is not a transaction, on any client: only for one script (refused or run
    whole) followed by key-less commands that cannot run inside ``MULTI`` (``WAIT`` answers at once
    there); sending it again after a refusal runs the script once."""
    return redis.Redis.pipeline(client, transaction=False)


def slot_master(seeds: list[tuple[str, int]], tag: str, connect_kwargs: dict[str, Any]) -> tuple[str, int]:
    """The (host, port) of the master serving ``tag``'s slot, asked of the seeds in random order.

    Every node the answer names is added to ``seeds`` (shared by a pool's connections), so a
    failover of the node ``REDIS_URL`` names does not leave the client without anyone to ask.
    Raises ``redis.ConnectionError`` when no seed answers or none knows a master for the slot."""
    slot = key_slot(tag.encode())
    order = list(seeds)
    random.shuffle(order)
    errors: list[str] = []
    for host, port in order:
        try:
            # no retry: redis-py's default (10 tries, backoff to 1 s) spent 3-4.6 s on a killed node
            with redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0), **connect_kwargs) as probe:
                ranges = probe.execute_command("CLUSTER SLOTS")
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        found = None
        for start, end, *nodes in ranges:
            addresses = [(_text(node[0]) or host, int(node[1])) for node in nodes]
            seeds.extend(a for a in addresses if a not in seeds)
            if int(start) <= slot <= int(end):
                found = addresses[0]
        if found is not None:
            return found
        errors.append(f"{host}:{port}: no master for slot {slot}")
    raise redis.ConnectionError(f"no cluster node serves slot {slot} of {tag} ({'; '.join(errors)})")


# Nodes learnt from CLUSTER SLOTS, per REDIS_URL node, for the life of the process: a client built
# after the node REDIS_URL names died (reset_connections, a new pool) still finds the promoted replica.
_KNOWN_NODES: dict[tuple[str, int], list[tuple[str, int]]] = {}
# The last master found for a tag, per REDIS_URL node, shared by every client of the process: once
# the health probe has found the promoted replica, the request client's next connect goes there
# instead of failing once more on the dead master (a second of spooling per client, measured).
_MASTERS: dict[tuple[tuple[str, int], str], dict[str, tuple[str, int]]] = {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SlotMasterConnection(Connection):
    """A connection to whichever master serves the tag's slot at connect time (see the module)."""

    def __init__(self, *, cluster_seeds: list[tuple[str, int]], cluster_tag: str,
                 cluster_master: dict[str, tuple[str, int]], **kwargs: Any) -> None:
        self.cluster_seeds = cluster_seeds
        self.cluster_tag = cluster_tag
        self.cluster_master = cluster_master  # shared by the pool's connections: the last master found
        self.served: tuple[str, int] | None = None  # the master this connection last reached
        super().__init__(**kwargs)

    def _probe_kwargs(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password,
                "socket_timeout": self.socket_connect_timeout or 2.0,
                "socket_connect_timeout": self.socket_connect_timeout or 2.0}

    def connect(self) -> None:
        if self._sock:
            return
        self._aim()
        try:
            super().connect()
        except (redis.ConnectionError, redis.TimeoutError):
            self.cluster_master.pop("address", None)  # the next connect asks the seeds again
            raise
        self._after_connect()

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        """redis-py 8 reconnects a dropped socket through this, not :meth:`connect` (a call sent
        again after :class:`SlotMoving` comes here): it must look the master up too."""
        if self._sock:
            return
        self._aim()
        try:
            super().connect_check_health(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            self.cluster_master.pop("address", None)
            raise
        self._after_connect()

    def _after_connect(self) -> None:
        """On a master other than the one this connection last reached: load our scripts first (see
        :func:`preload_on_new_master`; 18 scripts, measured well under a millisecond on loopback)."""
        address = (self.host, self.port)
        if self.served is not None and self.served != address:
            for text in _PRELOAD:
                self.send_command("SCRIPT", "LOAD", text)
                self.read_response()
            logger.info("cluster: loaded %d scripts on %s:%s, the new master of %s",
                        len(_PRELOAD), *address, self.cluster_tag)
        self.served = address

    def _aim(self) -> None:
        """Point this connection at the slot's master: the last one found, or asked of the seeds."""
        known = self.cluster_master.get("address")
        if known is None:
            known = slot_master(self.cluster_seeds, self.cluster_tag, self._probe_kwargs())
            self.cluster_master["address"] = known
            logger.info("cluster: %s is served by %s:%s", self.cluster_tag, *known)
        self.host, self.port = known

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.AskError as exc:  # MOVED and ASK: a key of another slot is a bug, not an outage
            if exc.slot_id != key_slot(self.cluster_tag.encode()):
                raise
            self._slot_moving(exc)
        except redis.exceptions.TryAgainError as exc:
            self._slot_moving(exc)
        except _MOVED_AWAY as exc:
            self._moved_away(exc)

    def _slot_moving(self, exc: redis.exceptions.ResponseError) -> NoReturn:
        """A reshard: ``ASK``/``TRYAGAIN`` while the slot migrates (the owner has not changed yet),
        ``MOVED`` once it has (ask the seeds again). Unread replies of a pipeline may follow: drop
        the socket (that also discards a refused ``MULTI``)."""
        moved = isinstance(exc, redis.exceptions.MovedError)
        if moved:
            logger.warning("cluster: %s moved from %s:%s (%s)", self.cluster_tag, self.host, self.port, exc)
            self.cluster_master.pop("address", None)
        self.disconnect()
        raise SlotMoving(f"the slot of {self.cluster_tag} is moving: {type(exc).__name__} {exc}", moved) from exc

    def _moved_away(self, exc: Exception) -> NoReturn:
        """Forget this master and drop the socket; the caller sees the usual lost connection."""
        logger.warning("cluster node %s:%s no longer serves %s (%s); reconnecting",
                       self.host, self.port, self.cluster_tag, exc)
        self.cluster_master.pop("address", None)
        self.disconnect()
        raise redis.ConnectionError(f"the master of {self.cluster_tag} moved: {exc}") from exc


class SlotMasterSSLConnection(SlotMasterConnection, SSLConnection):
    """The same over TLS (``rediss://``): ElastiCache Serverless accepts TLS only."""


def forget_masters() -> None:
    """Drop the masters found so far (``reset_connections``: a test's next cluster may reuse a port)."""
    _MASTERS.clear()


def cluster_client(url: str, tag: str, move_wait: float, **kwargs: Any) -> redis.Redis:
    """A client for cluster mode: ``url`` names any node (its host and port seed the lookup; its
    username, password and ``rediss://`` apply to every node). The database is always 0 on a
    cluster. ``move_wait``: seconds a call waits out a move of the slot (:class:`SlotMoveRetry`)."""
    base = ConnectionPool.from_url(url)
    ck = base.connection_kwargs
    seed = (str(ck.get("host", "127.0.0.1")), int(ck.get("port", 6379)))
    seeds = _KNOWN_NODES.setdefault(seed, [seed])  # shared by every client of the process: what one learnt stays
    tls = base.connection_class is not Connection and issubclass(base.connection_class, SSLConnection)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("ssl",) and not (k.startswith("ssl_") and not tls)}
    pool = ConnectionPool(connection_class=SlotMasterSSLConnection if tls else SlotMasterConnection,
                          cluster_seeds=seeds, cluster_tag=tag, cluster_master=_MASTERS.setdefault((seed, tag), {}),
                          username=ck.get("username"), password=ck.get("password"),
                          retry=SlotMoveRetry(move_wait), **kwargs)
    return SlotRedis(connection_pool=pool)
