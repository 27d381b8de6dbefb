"""Python's `redis` library (redis-py 5 or later) against a running Consistent Core cluster,
used as a new user would: expiring keys, a watch consumed through the library's pub/sub API
in RESP2 and in RESP3, a transaction pipeline, a WATCH-guarded transaction that loses a race
and is retried, and scan_iter. Run by examples/tests/it/core_redis.rs with the nodes' client
ports (and the password in SYNOD_PASSWORD, if the cluster asks for one); prints `ok` and exits
0 if every check holds, else fails with the first that did not.
"""

import os
import sys
import time

import redis

HOST = "127.0.0.1"
PASSWORD = os.environ.get("SYNOD_PASSWORD")
DEADLINE_S = 20


def messages(pubsub, kinds, count):
    """The next `count` messages of the given kinds, waiting at most DEADLINE_S."""
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {got} of {count} {kinds} messages arrived"
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] in kinds:
            got.append(message)
    return got


def main():
    ports = [int(p) for p in sys.argv[1].split(",")]
    r = redis.Redis(host=HOST, port=ports[0], password=PASSWORD, decode_responses=True)
    assert int(redis.__version__.split(".")[0]) >= 5, redis.__version__

    # SET ... EX and TTL, as Redis answers them.
    assert r.set("py/ttl", "v", ex=30) is True
    assert 0 < r.ttl("py/ttl") <= 30, r.ttl("py/ttl")
    assert r.ttl("py/missing") == -2
    assert r.set("py/plain", "v") is True and r.ttl("py/plain") == -1

    # A watch consumed through the library's pub/sub API, on a follower, in both protocols.
    for protocol in (2, 3):
        subscriber = redis.Redis(
            host=HOST,
            port=ports[1],
            password=PASSWORD,
            protocol=protocol,
            decode_responses=True,
        )
        pubsub = subscriber.pubsub()
        key = f"py/k{protocol}"
        pubsub.subscribe(f"__keyspace@0__:{key}")
        pubsub.psubscribe("__keyspace@0__:py/p*")
        messages(pubsub, ("subscribe", "psubscribe"), 2)
        r.set(key, "1")
        r.delete(key)
        r.set(f"py/p{protocol}", "x")
        got = messages(pubsub, ("message",), 2)
        assert [m["channel"] for m in got] == [f"__keyspace@0__:{key}"] * 2, got
        events = [m["data"].split(" ") for m in got]
        assert [e[0] for e in events] == ["set", "del"], events
        assert int(events[0][1]) < int(events[1][1]), events
        got = messages(pubsub, ("pmessage",), 1)
        assert got[0]["pattern"] == "__keyspace@0__:py/p*", got
        assert got[0]["channel"] == f"__keyspace@0__:py/p{protocol}", got
        assert got[0]["data"].startswith("set "), got
        pubsub.close()
        subscriber.close()

    # A transaction pipeline: MULTI ... EXEC, applied as one.
    with r.pipeline(transaction=True) as pipe:
        pipe.set("py/a", 1).incr("py/a").get("py/a")
        assert pipe.execute() == [True, 2, "2"]

    # A WATCH-guarded read-modify-write that loses a race to a writer on another node, and
    # is retried, as the library's documentation shows.
    other = redis.Redis(host=HOST, port=ports[2], password=PASSWORD, decode_responses=True)
    r.set("py/counter", 0)
    attempts = 0
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch("py/counter")
                current = int(pipe.get("py/counter"))
                attempts += 1
                if attempts == 1:
                    other.incrby("py/counter", 100)
                pipe.multi()
                pipe.set("py/counter", current + 1)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    assert attempts == 2, attempts
    assert r.get("py/counter") == "101", r.get("py/counter")

    # scan_iter: Redis's cursor SCAN with MATCH and COUNT, every key once at least.
    for i in range(50):
        r.set(f"py/scan/{i}", i)
    keys = set(r.scan_iter(match="py/scan/*", count=7))
    assert keys == {f"py/scan/{i}" for i in range(50)}, sorted(keys)
    print("ok")


if __name__ == "__main__":
    main()
