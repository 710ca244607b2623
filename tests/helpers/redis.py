"""Real Redis servers for the redis-stream tests: the machine's, or one a test starts.

Every machine this project is built and tested on (CI included) runs Redis
at 127.0.0.1:6379 and has ``redis-server``. Where there is none, the tests
fail -- never skip -- with what to do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mux_core.testing import ServerProcess

SHARED_URL = "redis://127.0.0.1:6379/0"
NO_REDIS = (
    "the redis-stream tests need a Redis server at 127.0.0.1:6379 and the redis-server "
    "binary: install it (apt-get install redis-server) and start it "
    "(redis-server --save '' --appendonly no --daemonize yes)"
)


def ping(port: int, *, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on host:port (plain TCP)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def require_shared_redis() -> None:
    """Fail (not skip) with what to do when the machine's Redis is missing."""
    import pytest

    if not ping(6379):
        pytest.fail(NO_REDIS, pytrace=False)


def unique_prefix() -> str:
    return f"muxtest:{uuid.uuid4().hex[:12]}:"


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def delete_prefix(port: int, prefix: str) -> None:
    keys = redis_cli(port, "--scan", "--pattern", f"{prefix}*").split()
    for start in range(0, len(keys), 500):
        redis_cli(port, "DEL", *keys[start : start + 500])


def kill_clients(port: int, name: str) -> int:
    """Close the connections named ``name`` (CLIENT SETNAME); how many there were."""
    ids = [
        fields["id"]
        for line in redis_cli(port, "CLIENT", "LIST").splitlines()
        if (fields := dict(f.split("=", 1) for f in line.split() if "=" in f)).get("name") == name
    ]
    for client_id in ids:
        redis_cli(port, "CLIENT", "KILL", "ID", client_id)
    return len(ids)


def free_port() -> int:
    """A port nothing listens on now (redis-server cannot be told to pick one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis(ServerProcess):
    """A redis-server a test starts, kills and starts again on the same port and dir.

    ``async with OwnRedis(directory) as redis`` starts it (``start()`` returns
    once it accepts connections) and stops it on exit; ``await redis.kill()``
    and ``await redis.start()`` in between.
    """

    def __init__(
        self, directory: Path, *, extra: Sequence[str] = (), tls_port: bool = False
    ) -> None:
        if shutil.which("redis-server") is None:
            import pytest

            pytest.fail(NO_REDIS, pytrace=False)
        self.dir = directory
        self.tls = tls_port
        ports = ["--port", "0", "--tls-port", "{port}"] if tls_port else ["--port", "{port}"]
        super().__init__(
            ["redis-server", *ports, "--dir", str(directory), "--bind", "{host}", *extra]
        )

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/0"

    def tls_len(self, key: str, ca_file: Path) -> int:
        """XLEN over TLS (redis-cli --tls)."""
        cli = ["redis-cli", "--tls", "--cacert", str(ca_file), "-h", self.host]
        out = subprocess.run(
            [*cli, "-p", str(self.port), "XLEN", key],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip() or 0)


def env_without_mux() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}


class OwnCluster:
    """A Redis Cluster of ``size`` primaries (no replicas) a test starts in ``directory``.

    Each node is a ``redis-server --cluster-enabled yes`` on a free port,
    keeping nothing on disk but its ``nodes-PORT.conf``; ``redis-cli
    --cluster create`` spreads the 16384 slots over them.
    """

    def __init__(self, directory: Path, *, size: int = 3) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            import pytest

            pytest.fail(NO_REDIS, pytrace=False)
        self.dir = directory
        node = [
            "redis-server",
            "--port", "{port}",
            "--bind", "{host}",
            "--dir", str(directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes-{port}.conf",
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        self.nodes = [ServerProcess(node, port=port) for port in _free_ports(size)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with the first node as the seed."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    async def start(self, timeout: float = 30.0) -> None:
        with trio.fail_after(timeout):
            for node in self.nodes:
                await node.start()  # returns once it accepts connections
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            await trio.run_process(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *nodes,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
            # Every node must know the whole layout before a client asks any of them.
            for port in self.ports:
                while "cluster_state:ok" not in await self._info(port):
                    self._check_alive()
                    await trio.sleep(0.05)

    async def _info(self, port: int) -> str:
        done = await trio.run_process(
            ["redis-cli", "-p", str(port), "CLUSTER", "INFO"], capture_stdout=True, check=False
        )
        return done.stdout.decode(errors="replace")

    def _check_alive(self) -> None:
        for node in self.nodes:
            assert node.running, f"a cluster node exited with {node.returncode}:\n{node.output()}"

    def slot_of(self, key: str) -> int:
        return int(redis_cli(self.ports[0], "CLUSTER", "KEYSLOT", key).strip())

    async def stop(self) -> None:
        for node in self.nodes:
            await node.kill()


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports; each port + 10000 (the cluster bus) must be free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@asynccontextmanager
async def own_cluster(directory: Path, *, size: int = 3) -> AsyncIterator[OwnCluster]:
    cluster = OwnCluster(directory, size=size)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


async def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` (sync or async) until true, failing after ``timeout`` s."""
    with trio.move_on_after(timeout) as scope:
        while True:
            result = condition()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await trio.sleep(0.02)
    assert not scope.cancelled_caught, f"timed out waiting for {what}"
