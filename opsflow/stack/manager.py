"""``opsflow stack up | status | down``: the local platform's lifecycle."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opsflow.core.errors import InvalidInput, ServiceError
from opsflow.stack import processes
from opsflow.stack.config import SERVICES, StackConfig, load_credentials
from opsflow.stack.provision import create_buckets, provision_prefect
from opsflow.stack.services import (
    ServiceSpec,
    build_specs,
    database_choice,
    ensure_dirs,
    external_docker,
    own_docker_socket,
)

WORKERS = ("worker-vault-build", "worker-edge")
#: Started with the others but awaited last: nothing ``up`` provisions needs them (MLflow takes ~25 s to import
#: and start; the Prefect blocks and the workers are made meanwhile).
AWAITED_LAST = ("mlflow",)


@dataclass
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    owned: bool
    running: bool
    healthy: bool

    def line(self) -> str:
        who = f"pid {self.pid}" if self.owned else "external"
        health = "healthy" if self.healthy else ("UNHEALTHY" if self.running else "STOPPED")
        return f"{self.name:<19} {health:<9} {self.url:<48} {who}"


class Stack:
    """One local stack, identified by its home directory."""

    def __init__(self, cfg: StackConfig, say: Callable[[str], None] = print):
        self.cfg = cfg
        self.say = say

    # State ------------------------------------------------------------------------

    def _load(self) -> dict:
        try:
            return json.loads(self.cfg.state_file.read_text())
        except (OSError, ValueError):
            return {"services": {}}

    def _save(self, state: dict) -> None:
        tmp = self.cfg.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.cfg.state_file)

    def _effective_config(self, state: dict) -> StackConfig:
        """A running stack keeps the ports (and the database) it was started with."""
        if state.get("services") and state.get("ports"):
            kept = {k: v for k, v in state["ports"].items() if k in self.cfg.ports()}
            if kept != {k: v for k, v in self.cfg.ports().items() if k in kept}:
                self.say(f"note: this stack already runs with ports {kept}; keeping them")
            database = state.get("database", "sqlite")  # a stack started before PostgreSQL became the default
            if database != self.cfg.database:
                self.say(f"note: this stack already runs on {database}; keeping it")
            return StackConfig(**{**self.cfg.__dict__, **kept, "database": database})
        return self.cfg

    @staticmethod
    def _running(rec: dict | None) -> bool:
        return bool(rec) and (not rec.get("owned") or processes.alive(rec["pid"], rec.get("ticks")))

    # up ---------------------------------------------------------------------------

    def up(self) -> list[str]:
        """Start what is not running, provision it, wait for health. Returns the names started."""
        state = self._load()
        cfg = self._effective_config(state)
        ensure_dirs(cfg)
        creds = load_credentials(cfg.home)
        records: dict = state.setdefault("services", {})
        state["ports"] = cfg.ports()
        state["database"] = cfg.database

        docker_url = self._docker_url(cfg, records)
        specs = build_specs(cfg, creds, docker_url or own_docker_socket(cfg))
        wanted = [s for s in SERVICES if s in cfg.services and s in specs]
        if "prefect" in wanted and (why := database_choice(cfg)[1]):
            self.say(f"warning: {why}")
        elif "prefect" in wanted and (cfg.home / "prefect" / "prefect.db").exists() and "prefect" not in records:
            self.say("note: the Prefect server runs on PostgreSQL; this home's SQLite database (prefect/prefect.db, "
                     "from an earlier opsflow) is not used (`--database sqlite` uses it)")
        to_start, recheck = self._plan(wanted, specs, records, docker_url)
        self._check_needs(cfg, wanted, to_start, records)
        self._preflight(cfg, to_start)
        self._save(state)

        started: list[str] = []
        try:
            first = [s for s in to_start if s.name not in WORKERS]
            later = self._start_all(cfg, first, records, state, started, defer=AWAITED_LAST)
            if "s3" in wanted:
                new = create_buckets(cfg, creds)
                if new:
                    self.say(f"s3: created buckets {', '.join(new)}")
            if "prefect" in wanted:
                effective_docker = records.get("docker", {}).get("url")
                for line in provision_prefect(cfg, creds, effective_docker):
                    self.say(f"prefect: {line}")
            workers = [s for s in to_start if s.name in WORKERS] + self._still_unhealthy(recheck, records)
            self._start_all(cfg, workers, records, state, started)
            self._await_healthy(later, records)
        except BaseException:
            for name in reversed(started):
                processes.stop(records[name]["pid"])
                records.pop(name, None)
            self._save(state)
            raise
        if not started:
            self.say("nothing to start: every service is already running")
        self.say(f"Prefect UI: {cfg.url(cfg.prefect_port)} (log in with the auth string in {cfg.auth_file})")
        return started

    def _plan(self, wanted: list[str], specs: dict[str, ServiceSpec], records: dict,
              docker_url: str | None) -> tuple[list[ServiceSpec], list[ServiceSpec]]:
        """What to start, and the running services whose health cannot be read now (to check once the rest is up).

        A service that runs but whose health cannot be read (a worker while the Prefect API is down) is
        never restarted for that: it is checked again after this ``up`` has started the rest.
        """
        to_start: list[ServiceSpec] = []
        recheck: list[ServiceSpec] = []
        for name in wanted:
            rec, spec = records.get(name), specs[name]
            if self._running(rec):
                healthy = spec.healthy()
                unknown = None if healthy or not spec.health_unknown else spec.health_unknown()
                if unknown:
                    self.say(f"{name}: running (pid {rec['pid']}); {unknown}, so its health cannot be read: not "
                             "restarting it")
                    recheck.append(spec)
                    continue
                if healthy or self._wait_healthy(spec, 15):
                    self.say(f"{name}: already running ({'pid ' + str(rec['pid']) if rec['owned'] else 'external'})")
                    continue
                self.say(f"{name}: running but not healthy; restarting it")
                processes.stop(rec["pid"])
            records.pop(name, None)
            if name == "docker" and docker_url:
                records[name] = {"owned": False, "url": docker_url}
                self.say(f"docker: using the engine at {docker_url}")
                continue
            to_start.append(spec)
        return to_start, recheck

    def _still_unhealthy(self, recheck: list[ServiceSpec], records: dict, grace_s: float = 45) -> list[ServiceSpec]:
        """Of the services whose health could not be read, those that are unhealthy now that it can be, after
        ``grace_s`` (a worker reconnects by itself); they are stopped, to be started again."""
        restart = []
        for spec in recheck:
            if spec.health_unknown and (unknown := spec.health_unknown()):
                self.say(f"{spec.name}: left running; {unknown} (it reconnects when the API is back)")
                continue
            if spec.healthy() or self._wait_healthy(spec, grace_s):
                self.say(f"{spec.name}: healthy again now that the Prefect API answers")
                continue
            self.say(f"{spec.name}: not healthy although the Prefect API answers; restarting it")
            processes.stop(records.pop(spec.name)["pid"])
            restart.append(spec)
        return restart

    def _docker_url(self, cfg: StackConfig, records: dict) -> str | None:
        """An engine to use as is, or None when the stack must start its own."""
        if "docker" not in cfg.services:
            return records.get("docker", {}).get("url") or external_docker()
        rec = records.get("docker")
        if rec and rec.get("owned") and processes.alive(rec["pid"], rec.get("ticks")):
            return None  # ours, checked with the others
        return external_docker()

    def _check_needs(self, cfg: StackConfig, wanted: list[str], to_start: list[ServiceSpec], records: dict) -> None:
        """Fail before starting anything when a service to start needs one that is neither chosen nor running
        (the Prefect server on the stack's PostgreSQL without ``postgres`` among the services)."""
        for spec in to_start:
            missing = [n for n in spec.needs if n not in wanted and not self._running(records.get(n))]
            if missing:
                raise InvalidInput(f"service {spec.name} needs {', '.join(missing)}, which is not among the services "
                                   f"to run ({', '.join(cfg.services)}); add it"
                                   + (" or use --database sqlite" if "postgres" in missing else ""))

    def _preflight(self, cfg: StackConfig, specs: list[ServiceSpec]) -> None:
        """Fail before starting anything: missing binaries, ports taken, no right to start dockerd."""
        for spec in specs:
            binary = spec.argv[0]
            if not shutil.which(binary) and not os.path.exists(binary):
                raise ServiceError(spec.name, f"{binary!r} is not installed; {spec.binary_hint or 'install it'}")
            if spec.name == "docker" and os.geteuid() != 0:
                raise ServiceError("docker", "no Docker engine answers at $DOCKER_HOST or /var/run/docker.sock, "
                                   "and starting dockerd needs root; start an engine or set DOCKER_HOST")
            if spec.port and not processes.port_free(cfg.host, spec.port):
                raise ServiceError(spec.name, f"port {spec.port} on {cfg.host} is taken by another process; "
                                   f"stop it or choose another port (OPSFLOW_{spec.name.upper()}_PORT)")

    def _start_all(self, cfg: StackConfig, specs: list[ServiceSpec], records: dict, state: dict,
                   started: list[str], defer: tuple[str, ...] = ()) -> dict[str, tuple[ServiceSpec, float]]:
        """Start ``specs`` and wait until each is healthy, or fail with its log tail. A service that needs
        another one of ``specs`` starts once that one is healthy. Those named in ``defer`` are started but not
        waited for: returned (with their start times) for :meth:`_await_healthy`."""
        waiting = list(specs)
        deferred: dict[str, tuple[ServiceSpec, float]] = {}
        while waiting:
            names = {s.name for s in waiting}
            wave = [s for s in waiting if not names & set(s.needs)]
            if needed := {n for s in wave for n in s.needs if n in deferred}:  # a dependent waits for it after all
                self._await_healthy({n: deferred.pop(n) for n in needed}, records)
            begun = self._spawn(cfg, wave, records, state, started)
            deferred.update({s.name: (s, begun[s.name]) for s in wave if s.name in defer})
            self._await_healthy({s.name: (s, begun[s.name]) for s in wave if s.name not in defer}, records)
            waiting = [s for s in waiting if s not in wave]
        return deferred

    def _spawn(self, cfg: StackConfig, specs: list[ServiceSpec], records: dict, state: dict,
               started: list[str]) -> dict[str, float]:
        begun: dict[str, float] = {}
        for spec in specs:
            log = cfg.logs / f"{spec.name}.log"
            if spec.prepare is not None:
                spec.prepare()
            pid = processes.spawn(spec.argv, env=spec.env, log_path=log, home=cfg.home, clean_env=spec.clean_env,
                                  user=spec.user)
            records[spec.name] = {"pid": pid, "ticks": processes.start_ticks(pid), "url": spec.url, "owned": True,
                                  "log": str(log)}
            started.append(spec.name)
            begun[spec.name] = time.monotonic()
            self._save(state)
        return begun

    def _await_healthy(self, pending: dict[str, tuple[ServiceSpec, float]], records: dict) -> None:
        """Until each of ``pending`` (name: its spec and start time) is healthy; fails with the log tail of one
        that exited or was not healthy within its ``start_timeout``."""
        pending = dict(pending)
        while pending:
            for name, (spec, begun) in list(pending.items()):
                rec = records[name]
                if spec.healthy():
                    self.say(f"{name}: started (pid {rec['pid']}) {spec.url} in {time.monotonic() - begun:.1f}s")
                    del pending[name]
                elif processes.exited(rec["pid"]):
                    raise ServiceError(name, "exited during start", processes.log_tail(Path(rec["log"])))
                elif time.monotonic() - begun > spec.start_timeout:
                    raise ServiceError(name, f"not healthy after {spec.start_timeout:.0f}s",
                                       processes.log_tail(Path(rec["log"])))
            if pending:
                time.sleep(0.3)

    @staticmethod
    def _wait_healthy(spec: ServiceSpec, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if spec.healthy():
                return True
            time.sleep(0.5)
        return False

    # status / down ----------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        """Each recorded service with its URL, process and health."""
        state = self._load()
        records = state.get("services", {})
        if not records:
            return []
        cfg = self._effective_config(state)
        creds = load_credentials(cfg.home)
        docker_url = records.get("docker", {}).get("url", own_docker_socket(cfg))
        specs = build_specs(cfg, creds, docker_url)
        out = []
        for name in SERVICES:
            rec = records.get(name)
            if not rec:
                continue
            running = self._running(rec)
            out.append(ServiceStatus(name, specs[name].url, rec.get("pid"), rec["owned"], running,
                                     running and specs[name].healthy()))
        return out

    def registry_gc(self) -> int:
        """Garbage-collect the stack's registry: stopped meanwhile (the documented safe way), then
        started again. Returns the bytes freed in its storage.

        Never ``--delete-untagged``: distribution 2.8 then deletes the untagged platform manifests of a kept
        multi-arch image (its index then answers 404 for them). Registry cleanup deletes what it removes by
        digest, so the plain mark-and-sweep frees their blobs."""
        from opsflow.core.files import directory_bytes
        from opsflow.core.proc import run

        state = self._load()
        records = state.get("services", {})
        rec = records.get("registry")
        if not self._running(rec) or not rec.get("owned"):
            raise ServiceError("registry", "not running as part of this stack; start it with `opsflow stack up`")
        cfg = self._effective_config(state)
        docker_url = records.get("docker", {}).get("url", own_docker_socket(cfg))
        spec = build_specs(cfg, load_credentials(cfg.home), docker_url)["registry"]
        storage = cfg.home / "registry" / "data"
        before = directory_bytes(storage)
        processes.stop(rec["pid"])
        records.pop("registry")
        self._save(state)
        try:
            run([spec.argv[0], "garbage-collect", spec.argv[-1]], timeout=1800)
        finally:
            self._start_all(cfg, [spec], records, state, [])
        freed = before - directory_bytes(storage)
        self.say(f"registry: garbage collection freed {freed} bytes")
        return freed

    def down(self) -> list[str]:
        """Stop the selected services this stack started (newest first); once none is left
        running, also any process they left behind."""
        state = self._load()
        records = state.get("services", {})
        stopped = []
        for name in reversed(SERVICES):
            if name not in self.cfg.services:
                continue
            rec = records.pop(name, None)
            if not rec:
                continue
            if rec.get("owned") and processes.alive(rec["pid"], rec.get("ticks")):
                processes.stop(rec["pid"], grace=20 if name == "docker" else 10)
                stopped.append(name)
                self.say(f"{name}: stopped")
        leftovers = [] if records else processes.sweep(self.cfg.home)
        if leftovers:
            self.say(f"stopped {len(leftovers)} leftover process(es) of this stack")
        if self.cfg.state_file.exists():
            self._save(state)
        if not stopped and not leftovers:
            self.say("nothing was running")
        return stopped

