"""Start a private Redis Cluster: 3 masters + 3 replicas on free ports (for the tests and ``make bench``).

Six ``redis-server --cluster-enabled yes`` children joined by ``redis-cli --cluster create … --cluster-replicas 1``
(Debian's redis-tools; ``make test`` installs it). A short ``cluster-node-timeout`` makes a failover take a few
seconds instead of fifteen. It never touches another server.

A node dies with the thread that started it (:func:`infra.platform.processes.die_with_parent`), so a
killed node is started again with :meth:`RedisClusterServers.restart`, on the cluster's own thread, which
lives until :meth:`~RedisClusterServers.cleanup`: started from a short-lived thread (a chaos schedule), it
would be SIGKILLed the moment that thread ended.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from redis.crc import key_slot

from infra.platform.redis_server import RedisServer, find_redis_server, free_port

MASTERS = 3
NODE_TIMEOUT_MS = 2000


class RedisCliMissing(RuntimeError):
    """``redis-cli`` (Debian's redis-tools) is not on PATH, so a cluster cannot be created."""


def find_redis_cli() -> str:
    found = shutil.which("redis-cli")
    if not found:
        raise RedisCliMissing("redis-cli not found: install Debian's redis-tools (make system-deps does)")
    return found


class RedisClusterServers:
    """Six redis-server nodes formed into one cluster; ``url`` names the first node (any node will do)."""

    def __init__(self, data_dir: str | Path | None = None, node_timeout_ms: int = NODE_TIMEOUT_MS) -> None:
        self.cli = find_redis_cli()
        find_redis_server()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="wsm-cluster-")
        root = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.nodes: list[RedisServer] = []
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="redis-cluster-starter")  # see restart()
        for i in range(MASTERS * 2):
            port = free_port()
            options = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
            options += ("--cluster-node-timeout", str(node_timeout_ms))
            options += ("--cluster-port", str(free_port()))  # the bus port, else port + 10000 (may not exist)
            options += ("--repl-diskless-sync-delay", "0")  # a replica (or a master back as one) syncs at once
            self.nodes.append(RedisServer(port, root / f"node{i}", appendfsync="everysec", extra_args=options))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout_s: float = 60.0) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                node.wait_ready()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {(created.stdout + created.stderr)[-2000:]}")
            self.wait_healthy(timeout_s)
        except BaseException:
            self.cleanup()
            raise
        return self

    def restart(self, node: RedisServer, timeout_s: float = 10.0) -> None:
        """Start a killed node again (a master comes back as a replica), from a thread that outlives the caller."""
        self._starter.submit(node.start, timeout_s).result()

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True, socket_timeout=5)

    def roles(self) -> dict[int, str]:
        """``port -> "master" | "slave"`` of every live node, as each node sees itself."""
        out = {}
        for node in self.nodes:
            if node.alive():
                try:
                    out[node.port] = self.client(node).execute_command("ROLE")[0]
                except redis.RedisError:
                    continue
        return out

    def masters(self) -> list[RedisServer]:
        roles = self.roles()
        return [n for n in self.nodes if roles.get(n.port) == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The live master serving ``key``'s slot now (as the masters themselves see it)."""
        slot = key_slot(key.encode())
        for node in self.masters():
            for start, end, owner, *_replicas in self.client(node).execute_command("CLUSTER SLOTS"):
                if start <= slot <= end and owner[1] == node.port:
                    return node
        raise LookupError(f"no live master serves slot {slot}")

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        info = self.client(master).info("replication")
        ports = {info[k]["port"] for k in info if k.startswith("slave") and isinstance(info[k], dict)}
        return [n for n in self.nodes if n.port in ports]

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until every live node reports ``cluster_state:ok`` and each master's replica is in sync."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                live = [n for n in self.nodes if n.alive()]
                states = [self.client(n).cluster("info")["cluster_state"] for n in live]
                synced = all(self.client(n).info("replication").get("master_link_status", "up") == "up" for n in live)
                if all(s == "ok" for s in states) and synced and len(self.masters()) >= MASTERS:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become healthy; see the nodes' redis.log")
            time.sleep(0.2)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            if not node.wait(10):
                node.kill()
        self._starter.shutdown()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
