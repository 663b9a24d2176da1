"""``opsflow worker start``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from opsflow.core.commands import require_prefect_api


def settings_from(args: argparse.Namespace, environ=os.environ):
    """The worker's settings from ``opsflow worker start``'s arguments (``--warm``, else ``OPSFLOW_WORKER_WARM``)."""
    from opsflow.worker.config import WorkerSettings, warm_from

    return WorkerSettings(
        limit=args.limit, preload=tuple(args.preload) if args.preload else None,
        warm=warm_from(args.warm, environ),
        poll_interval=args.poll_interval,
        fallback_poll_interval=args.fallback_poll_interval, shutdown_timeout=args.shutdown_timeout,
        workdir_root=Path(args.workdir_root) if args.workdir_root else None,
        state_dir=Path(args.state_dir) if args.state_dir else None)


def _start(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    settings = settings_from(args)
    require_prefect_api("the worker")
    from opsflow.worker.prefect_worker import OpsflowWorker

    worker = OpsflowWorker(args.pool, work_queues=args.queue or None, name=args.name or None,
                           heartbeat_interval_seconds=args.heartbeat_interval, settings=settings)
    asyncio.run(worker.start(printer=lambda line: logging.getLogger("opsflow.worker").info("%s", line)))
    return 0


def register(subparsers) -> None:
    """Add ``worker start`` to the ``opsflow`` command line."""
    worker = subparsers.add_parser("worker", help="run flow runs of a work pool, started within a second")
    add_actions(worker.add_subparsers(dest="worker_action", required=True))


def add_actions(actions) -> None:
    """The actions of ``opsflow worker``, also ``python -m opsflow.worker``'s
    (:func:`opsflow.core.commands.module_parser`)."""
    start = actions.add_parser(
        "start", help="serve a work pool until SIGTERM/SIGINT",
        description="The Prefect worker type `opsflow` (the same as `prefect worker start --type opsflow`): "
        "claims the runs the server lets the pool start (woken by the server's event stream, with a poll as "
        "fallback) and runs each in its own process, forked from a zygote that has imported Prefect and the "
        "flow modules, in a fresh working directory. The Prefect server is $PREFECT_API_URL. "
        "SIGTERM/SIGINT: stop taking runs, wait for the running ones, exit 0.")
    start.add_argument("--pool", required=True, help="work pool to serve (created as type opsflow when missing)")
    start.add_argument("--queue", action="append", default=[],
                       help="only runs of this work queue of the pool; repeatable (default: every queue)")
    start.add_argument("--name", help="worker name shown under the pool (default <pool>-<hostname>)")
    start.add_argument("--limit", type=int, default=4, help="flow runs at a time (default 4)")
    start.add_argument("--state-dir", help="where the worker keeps its run records "
                       "(default: $TMPDIR/opsflow-worker-<name>/records-<hash of the API URL>)")
    start.add_argument("--preload", action="append", default=[],
                       help="module the zygote imports before forking runs; repeatable "
                       "(default: every module under flows/)")
    start.add_argument("--warm", action="append", default=[],
                       help="library the zygote imports once ready, while no run is asked for (the tasks import "
                       "them only when they run); repeatable or comma-separated, `none` for nothing; skipped "
                       "when not installed (default: boto3, git, docker, kubernetes.dynamic, dvc.repo, "
                       "mlflow.tracking, mlflow.models)")
    start.add_argument("--poll-interval", type=float, default=5.0,
                       help="seconds between polls while the event stream is up (default 5; a run due between "
                       "two polls is woken for at its time)")
    start.add_argument("--fallback-poll-interval", type=float, default=0.25,
                       help="seconds between polls while the event stream is down (default 0.25)")
    start.add_argument("--heartbeat-interval", type=int, default=10, help="seconds between worker heartbeats")
    start.add_argument("--shutdown-timeout", type=float, default=60.0,
                       help="seconds SIGTERM waits for running runs before killing them (default 60)")
    start.add_argument("--workdir-root", help="where runs' working directories go unless the pool or deployment "
                       "sets working_dir_root (default: $TMPDIR)")
    start.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    start.set_defaults(func=_start)
