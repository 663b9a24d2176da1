"""Edge nodes for tests and benchmarks: extra Docker engines on this machine, one per node.

Each node is a real ``dockerd`` with its own socket, data root, bridge and address pool (bridge
networking, Docker's default on a real edge node), and publishes container ports on its own
loopback address (``--ip 127.0.<n>.1``), so four nodes can all serve port 8080 side by side as
four machines would. Needs root (bridges are created with ``ip``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from opsflow.stack.services import docker_ping, docker_storage_driver

_FIRST_INDEX = 60


@dataclass
class EdgeNode:
    name: str
    base_url: str
    public_host: str
    bridge: str
    process: subprocess.Popen


def _free_index(start: int) -> int:
    index = start
    while Path(f"/sys/class/net/opsedge{index}").exists():
        index += 1
    return index


def _start(index: int, name: str, root: Path) -> EdgeNode:
    bridge, host = f"opsedge{index}", f"127.0.{index}.1"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"172.29.{index}.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    node_root = root / name
    node_root.mkdir(parents=True, exist_ok=True)
    socket = f"unix://{node_root / 'docker.sock'}"
    argv = ["dockerd", f"--storage-driver={docker_storage_driver(node_root)}", f"--bridge={bridge}",
            "--iptables=false", "--ip-masq=false",
            f"--ip={host}", f"--default-address-pool=base=10.{index}.0.0/16,size=24", f"--host={socket}",
            f"--data-root={node_root / 'data'}", f"--exec-root=/tmp/opsedge-{index}",
            f"--pidfile={node_root / 'docker.pid'}", "--insecure-registry=127.0.0.0/8"]
    log = open(node_root / "dockerd.log", "ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while not docker_ping(socket):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (node_root / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"edge node {name}'s dockerd did not start:\n{tail}")
        time.sleep(0.2)
    return EdgeNode(name, socket, host, bridge, process)


def _stop(node: EdgeNode) -> None:
    import docker

    with contextlib.suppress(Exception):
        client = docker.DockerClient(base_url=node.base_url, timeout=60)
        for container in client.containers.list(all=True):
            container.remove(force=True)
        client.networks.prune()
        client.close()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.process.pid, signal.SIGTERM)
    try:
        node.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=10)
    subprocess.run(["ip", "link", "del", node.bridge], check=False)


@contextlib.contextmanager
def edge_nodes(count: int, root: Path, prefix: str = "edge") -> Iterator[list[EdgeNode]]:
    """Start ``count`` edge-node engines under ``root``; stop them and remove everything after."""
    nodes: list[EdgeNode] = []
    try:
        index = _FIRST_INDEX
        for i in range(count):
            index = _free_index(index)
            nodes.append(_start(index, f"{prefix}-{i + 1}", root))
            index += 1
        yield nodes
    finally:
        for node in nodes:
            _stop(node)
        shutil.rmtree(root, ignore_errors=True)


class Prober:
    """Reads ``url`` every ``interval`` seconds (20 Hz by default; a new connection each time, as
    separate clients would) while the ``with`` block runs; ``seen`` holds the bodies of 200 answers,
    ``failed`` every error or other status, ``stamps`` (perf_counter, body or "-") for each read."""

    def __init__(self, url: str, interval: float = 0.05, timeout: float = 2):
        import httpx

        self.url, self.interval, self.seen, self.failed = url, interval, [], []
        self.stamps: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=timeout, headers={"Connection": "close"})
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import httpx

        while not self._stop.is_set():
            try:
                resp = self._http.get(self.url)
                (self.seen if resp.status_code == 200 else self.failed).append(resp.text.strip() or resp.status_code)
                self.stamps.append((time.perf_counter(), resp.text.strip() if resp.status_code == 200 else "-"))
            except httpx.HTTPError as exc:
                self.failed.append(type(exc).__name__)
                self.stamps.append((time.perf_counter(), "-"))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self._http.close()


def run_deploy(**kwargs):
    """Run the (async) ``manual-deploy`` flow in this process and return what it returns (its final
    state with ``return_state=True``)."""
    import asyncio

    from flows.manual_deploy import manual_deploy

    return asyncio.run(manual_deploy(**kwargs))
