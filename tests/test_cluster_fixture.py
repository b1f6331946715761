"""The Redis Cluster fixture of issue 25 works as the cluster tests will need it: three masters own
all 16,384 slots, a client follows MOVED to the right node, keys with one hash tag share a node
(so a Lua script may touch them together), keys without one are refused together (CROSSSLOT, the
error today's lifecycle scripts would hit), and a killed master's replica takes over its slots."""

from __future__ import annotations

import pytest
import redis

from tests.cluster_servers import RedisClusterSet
from tests.servers import wait_until


@pytest.fixture
def cluster():
    started = RedisClusterSet(masters=3, replicas=1).start()
    yield started
    started.cleanup()


def test_three_masters_share_the_slots_and_a_hash_tag_keeps_a_queue_on_one_node(cluster):
    client = cluster.client()
    assert len(cluster.masters()) == 3
    assert int(client.cluster_info()["cluster_slots_assigned"]) == 16384
    tagged = ["{fikiri:email}:queue", "{fikiri:email}:job:abc", "{fikiri:email}:started"]
    assert len({cluster.node_for(key).port for key in tagged}) == 1
    spread = [f"rq:job:{n}" for n in range(30)]
    assert len({cluster.node_for(key).port for key in spread}) == 3  # untagged keys land on every master
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('LPUSH', KEYS[2], ARGV[1])"
    assert client.eval(script, 2, tagged[1], tagged[0], "x") == 1
    with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
        client.eval(script, 2, "rq:job:a", "rq:queue:fikiri:email", "x")  # redis-py refuses before sending
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):  # CROSSSLOT from the server itself
        cluster.masters()[0].client().eval(script, 2, "rq:job:a", "rq:queue:fikiri:email", "x")


def test_a_killed_masters_replica_takes_over_and_keeps_its_acknowledged_writes(cluster):
    client = cluster.client()
    key = "{fikiri:ai}:probe"
    client.set(key, "kept")
    old = cluster.node_for(key)
    assert old.client().wait(1, 2000) == 1  # the replica has it before the master dies (WAIT, issue 21)
    old.kill()
    wait_until(lambda: (node := _owner(cluster, key)) is not None and node.port != old.port, timeout=30,
               interval=0.2, message="the replica to be promoted for the killed master's slots")
    fresh = cluster.client()
    assert fresh.get(key) == b"kept"


def _owner(cluster: RedisClusterSet, key: str):
    try:
        return cluster.node_for(key)
    except (StopIteration, AssertionError, redis.RedisError, OSError):
        return None


def test_the_cluster_too_fixture_is_three_masters_whose_url_is_not_the_slots_master():
    """ThreeMasterCluster (what the suites marked cluster_too run on): REDIS_URL names another
    master, so clients must find the slot's master; stop() leaves the slot unserved (no replica)
    and start() brings that master back from its nodes.conf and AOF, with its keys."""
    from redis.crc import key_slot

    from tests.cluster_servers import ThreeMasterCluster
    from tests.servers import TAG, tkey

    cluster = ThreeMasterCluster(appendonly=True).start()
    try:
        assert len(cluster.nodes) == 3 and cluster.seed.port != cluster.master.port
        assert cluster.url.endswith(f":{cluster.seed.port}/0")
        slot = key_slot(TAG.encode())
        with cluster.seed.client() as seed:
            owners = {int(m[1]) for lo, hi, m, *_ in seed.execute_command("CLUSTER", "SLOTS") if lo <= slot <= hi}
            assert owners == {cluster.master.port}
            with pytest.raises(redis.exceptions.MovedError):
                seed.set(tkey("probe"), "x")  # the seed does not serve our slot
        cluster.client().set(tkey("probe"), "kept")
        assert cluster.all_keys() == [tkey("probe")]
        cluster.stop()
        with pytest.raises(redis.ConnectionError):
            cluster.client().get(tkey("probe"))
        cluster.start()
        assert cluster.client().get(tkey("probe")) == b"kept"
        stray = next(f"stray:{i}" for i in range(1000) if key_slot(f"stray:{i}".encode()) < 5461)
        with cluster.nodes[0].client() as first:
            first.set(stray, "x")  # a key of another master: what conftest's untagged-key check must see
        assert sorted(cluster.all_keys()) == sorted([tkey("probe"), stray])
    finally:
        cluster.cleanup()
