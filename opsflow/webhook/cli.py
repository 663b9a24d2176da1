"""``opsflow webhook serve``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    # Before Prefect is imported: an attempt fails after one retry instead of the client's long
    # schedule; the receiver's own retry thread keeps trying in the background.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "1")
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "10")
    from opsflow.webhook.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Prefect API request otherwise
    serve(args.forge_block, host=args.host, port=args.port, journal=Path(args.journal), max_body=args.max_body,
          deployment=args.deployment, answer_within_s=args.answer_within_ms / 1000)
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def register(subparsers) -> None:
    """Add ``webhook serve`` to the ``opsflow`` command line."""
    webhook = subparsers.add_parser("webhook", help="receive forge webhooks and start the pipelines")
    actions = webhook.add_subparsers(dest="webhook_action", required=True)
    serve = actions.add_parser(
        "serve", help="serve /hooks/<forge> until stopped",
        description="Receive the deliveries of one forge (the kind of the GitForge block) on /hooks/<kind>, "
        "verify them with the block's webhook_secret, record them and start the GitOps/MLOps deployments.")
    serve.add_argument("--forge-block", required=True, help="GitForge block whose webhook_secret signs deliveries")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=4300, help="port to listen on (default 4300)")
    serve.add_argument("--journal", default=".opsflow/webhook/deliveries.sqlite3",
                       help="SQLite file of accepted deliveries, kept across restarts")
    serve.add_argument("--max-body", type=_positive, default=1 << 20,
                       help="largest body accepted, in bytes (default 1 MiB)")
    serve.add_argument("--deployment", default="default",
                       help="name of the deployments the runs go to: <flow>/<this>, e.g. gitops-pr/default")
    serve.add_argument("--answer-within-ms", type=_positive, default=75,
                       help="how long a delivery waits for its run before the answer is a 202 without the "
                       "flow run id (the run is still created; default 75)")
    serve.set_defaults(func=_serve)
