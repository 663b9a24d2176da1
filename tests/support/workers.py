"""``opsflow.worker`` processes started by tests: finding what they left behind, stopping them, waiting for them."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TAG = "OPSFLOW_WORKER_TEST_TAG"


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``OPSFLOW_WORKER_TEST_TAG=tag`` (a worker and all it started)."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log: Path
    name: str
    tag: str
    argv: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM, wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.name} did not stop within {timeout} s:\n{self.log_text()[-3000:]}") \
                from None


def wait_online(client, pool: str, worker: WorkerProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{worker.log_text()[-3000:]}"
        # The heartbeat comes once the zygote is ready; the watcher subscribes right after it.
        listed = client.read_workers_for_work_pool(pool)
        online = any(w.name == worker.name and w.status.value == "ONLINE" for w in listed)
        if online and "subscribed to the events of work pool" in worker.log_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"worker {worker.name} not online within {timeout} s:\n{worker.log_text()[-3000:]}")
