"""The ``opsflow`` command line."""

from __future__ import annotations

import argparse
import sys

from opsflow.core.errors import OpsflowError


def _stack_config(args: argparse.Namespace):
    from opsflow.stack import StackConfig
    from opsflow.stack.config import SERVICES

    services = tuple(s.strip() for s in args.services.split(",")) if args.services else SERVICES
    return StackConfig.from_env(
        home=args.home, prefect_port=args.prefect_port, s3_port=args.s3_port,
        registry_port=args.registry_port, mlflow_port=args.mlflow_port, services=services,
    )


def _cmd_stack(args: argparse.Namespace) -> int:
    from opsflow.stack import Stack

    stack = Stack(_stack_config(args))
    if args.action == "up":
        stack.up()
        return 0
    if args.action == "down":
        stack.down()
        return 0
    if args.action == "registry-gc":
        stack.registry_gc()
        return 0
    rows = stack.status()
    if not rows:
        print(f"no stack recorded under {stack.cfg.home}; run `opsflow stack up`")
        return 3
    for row in rows:
        print(row.line())
    return 0 if all(r.healthy for r in rows) else 3


def _cmd_demo(args: argparse.Namespace) -> int:
    from opsflow.demo import run_all_demos

    run_all_demos(_stack_config(args))
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from prefect.settings import temporary_settings

    from opsflow.deploy import deploy_all

    if args.api_url:  # another server: its auth string comes from PREFECT_API_AUTH_STRING, as for any client
        deploy_all(args.api_url, with_kubernetes=not args.no_kubernetes)
        return 0
    cfg = _stack_config(args)
    with temporary_settings(cfg.client_settings()):
        deploy_all(cfg.prefect_api_url, with_kubernetes=not args.no_kubernetes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsflow", description="Prefect workflows for a small platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", help="state directory (default $OPSFLOW_HOME or .opsflow)")
        p.add_argument("--prefect-port", type=int, help="Prefect server port (default 4200)")
        p.add_argument("--s3-port", type=int, help="S3 object storage port (default 9000)")
        p.add_argument("--registry-port", type=int, help="container registry port (default 5000)")
        p.add_argument("--mlflow-port", type=int, help="MLflow server port (default 5001)")
        p.add_argument("--services", help="comma-separated subset to manage (default: all)")

    stack = sub.add_parser("stack", help="start, inspect or stop the local platform on 127.0.0.1",
                           description="The PostgreSQL URL for the Prefect server is read from "
                           "$OPSFLOW_DATABASE_URL only, so its password never shows in a process list.")
    stack.add_argument("action", choices=["up", "status", "down", "registry-gc"],
                       help="registry-gc: stop the registry, garbage-collect its storage, start it again")
    stack_options(stack)
    stack.set_defaults(func=_cmd_stack)

    demo = sub.add_parser("demo", help="bring the stack up and run the demo pipelines through Prefect")
    stack_options(demo)
    demo.set_defaults(func=_cmd_demo)

    deploy = sub.add_parser("deploy",
                            help="create the work pools and apply every deployment of deployments/prefect.yaml")
    deploy.add_argument("--api-url", help="Prefect API URL (default: the local stack's)")
    deploy.add_argument("--no-kubernetes", action="store_true", help="do not create the kubernetes work pool")
    stack_options(deploy)
    deploy.set_defaults(func=_cmd_deploy)

    from opsflow.webhook.cli import register as register_webhook

    register_webhook(sub)
    from opsflow.worker.cli import register as register_worker

    register_worker(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OpsflowError as exc:
        print(f"opsflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
