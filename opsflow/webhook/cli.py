"""``opsflow webhook serve``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from opsflow.core.commands import require_prefect_api


def _serve(args: argparse.Namespace) -> int:
    # Before Prefect is imported: loading the application blocks fails fast when the API is down
    # (the delivery is answered 503 and the forge can redeliver) instead of waiting out retries.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "0")
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "10")
    require_prefect_api("the webhook receiver")
    from opsflow.webhook.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.forge_block, host=args.host, port=args.port, journal=Path(args.journal), max_body=args.max_body,
          deployment=args.deployment, answer_within_s=args.answer_within_ms / 1000,
          header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout, max_connections=args.max_connections,
          tls_cert=Path(args.tls_cert) if args.tls_cert else None, tls_key=Path(args.tls_key) if args.tls_key else None)
    return 0


def register(subparsers) -> None:
    """Add ``webhook serve`` to the ``opsflow`` command line."""
    webhook = subparsers.add_parser("webhook", help="receive forge webhooks and start the pipelines")
    add_actions(webhook.add_subparsers(dest="webhook_action", required=True))


def add_actions(actions) -> None:
    """The actions of ``opsflow webhook``, also ``python -m opsflow.webhook``'s
    (:func:`opsflow.core.commands.module_parser`)."""
    serve = actions.add_parser(
        "serve", help="serve /hooks/<forge> until stopped",
        description="Receives the forge's signed webhook deliveries on /hooks/<kind of the GitForge block> and "
        "starts the GitOps/MLOps deployments for them. The Prefect server is $PREFECT_API_URL.")
    serve.add_argument("--forge-block", required=True, help="GitForge block whose webhook_secret signs deliveries")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 behind your TLS reverse proxy)")
    serve.add_argument("--port", type=int, default=4300, help="port to listen on (default 4300)")
    serve.add_argument("--journal", default=".opsflow/webhook/deliveries.sqlite3",
                       help="SQLite file of accepted deliveries (kept across restarts)")
    serve.add_argument("--max-body", type=int, default=1 << 20, help="largest body accepted, in bytes")
    serve.add_argument("--deployment", default="default",
                       help="deployment name the runs go to: <flow>/<name>, e.g. gitops-pr/default")
    serve.add_argument("--answer-within-ms", type=int, default=80,
                       help="longest a delivery waits for its run to be created; after that it is answered 202 "
                            "with status 'queued' and the run is created in the background")
    serve.add_argument("--header-timeout", type=float, default=10,
                       help="seconds a request's headers may take to arrive; slower clients get 408 and are cut off")
    serve.add_argument("--body-timeout", type=float, default=10,
                       help="seconds a request's body may take to arrive; slower clients get 408 and are cut off")
    serve.add_argument("--max-connections", type=int, default=1000,
                       help="connections served at once; beyond it new requests are answered 503 at once")
    serve.add_argument("--tls-cert", help="serve HTTPS with this certificate (chain) file (PEM), for a receiver "
                       "without a TLS reverse proxy in front")
    serve.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    serve.set_defaults(func=_serve)
