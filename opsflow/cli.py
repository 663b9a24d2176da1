"""The ``opsflow`` command line.

Errors are one line on stderr (``opsflow: error: <what failed>: <what to do>``), with the output
or log tail of a failed command or service below it; the traceback only with ``--debug``.
Exit codes (:data:`EXIT_CODES`, also in ``opsflow --help``): 0 done, 1 failed, 2 usage error
(argparse's), 3 unhealthy (``stack status``), 4 a service could not be reached (try again once it
answers), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from opsflow.core.commands import (  # noqa: F401 - the exit codes and explain() are part of this module's API
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    explain,
    run_command,
)


def _stack_config(args: argparse.Namespace):
    from opsflow.stack import StackConfig
    from opsflow.stack.config import SERVICES

    services = tuple(s.strip() for s in args.services.split(",")) if args.services else SERVICES
    return StackConfig.from_env(
        home=args.home, prefect_port=args.prefect_port, s3_port=args.s3_port,
        registry_port=args.registry_port, mlflow_port=args.mlflow_port, postgres_port=args.postgres_port,
        services=services, database=args.database,
    )


def _cmd_stack(args: argparse.Namespace) -> int:
    from opsflow.stack import Stack

    stack = Stack(_stack_config(args))
    if args.action == "up":
        stack.up()
        return EXIT_OK
    if args.action == "down":
        stack.down()
        return EXIT_OK
    if args.action == "registry-gc":
        stack.registry_gc()
        return EXIT_OK
    rows = stack.status()
    if not rows:
        print(f"no stack recorded under {stack.cfg.home}; run `opsflow stack up`")
        return EXIT_UNHEALTHY
    for row in rows:
        print(row.line())
    return EXIT_OK if all(r.healthy for r in rows) else EXIT_UNHEALTHY


def _cmd_demo(args: argparse.Namespace) -> int:
    from opsflow.demo import run_all_demos

    run_all_demos(_stack_config(args))
    return EXIT_OK


def _api_target(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """``--api-url``, else ``$PREFECT_API_URL`` (its auth string from ``PREFECT_API_AUTH_STRING``, as for any
    client), else the local stack's URL with the stack's auth string; and the Prefect settings to apply."""
    url = args.api_url or os.environ.get("PREFECT_API_URL")
    if url:
        return url, {}
    cfg = _stack_config(args)
    return cfg.prefect_api_url, cfg.client_settings()


def _cmd_apply(args: argparse.Namespace) -> int:
    if args.command == "deploy":
        print("opsflow: `opsflow deploy` is now `opsflow apply` (it applies the Prefect deployments; a deploy of an "
              "application is the manual-deploy flow); running `opsflow apply`", file=sys.stderr)
    from prefect.settings import temporary_settings

    from opsflow.deploy import deploy_all

    url, settings = _api_target(args)
    with temporary_settings(settings):
        deploy_all(url, with_kubernetes=not args.no_kubernetes, repository=args.repository,
                   commit=args.commit, notify_block=args.notify_block, only=args.only or None)
    return EXIT_OK


def _cmd_runs_watch(args: argparse.Namespace) -> int:
    from prefect.settings import temporary_settings

    from opsflow.runs import watch

    url, settings = _api_target(args)
    with temporary_settings({"api.url": url, **settings}):
        return watch(args.run, interval=args.interval, timeout=args.timeout)


def _stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="state directory (default $OPSFLOW_HOME or .opsflow)")
    p.add_argument("--prefect-port", type=int, help="Prefect server port (default 4200)")
    p.add_argument("--s3-port", type=int, help="S3 object storage port (default 9000)")
    p.add_argument("--registry-port", type=int, help="container registry port (default 5000)")
    p.add_argument("--mlflow-port", type=int, help="MLflow server port (default 5001)")
    p.add_argument("--postgres-port", type=int, help="the stack's PostgreSQL port (default 5433)")
    p.add_argument("--database", choices=["postgres", "sqlite"],
                   help="the Prefect server's database: a private PostgreSQL cluster under the home (default; "
                   "$OPSFLOW_DATABASE) or SQLite, which does not hold concurrent load")
    p.add_argument("--services", help="comma-separated subset to manage (default: all)")


def _apply_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL, else the local stack's)")
    p.add_argument("--no-kubernetes", action="store_true", help="do not create the kubernetes work pool")
    p.add_argument("--repository", help="git URL every worker clones opsflow from (default: $OPSFLOW_REPOSITORY, "
                   "else the checkout's origin or the wheel's recorded one, else this checkout); no credentials")
    p.add_argument("--commit", help="full commit SHA to apply (default: this checkout's HEAD or the wheel's commit)")
    p.add_argument("--notify-block", default=os.environ.get("OPSFLOW_NOTIFY_BLOCK"),
                   help="<block type slug>/<name> of a Prefect notification block (e.g. slack-webhook/platform) that "
                   "gets failed or crashed runs and runs held for approval (default $OPSFLOW_NOTIFY_BLOCK; none: "
                   "no automations)")
    p.add_argument("--only", action="append", metavar="FLOW/DEPLOYMENT",
                   help="apply only this deployment, e.g. manual-deploy/edge-local; repeatable (default: all)")
    _stack_options(p)
    p.set_defaults(func=_cmd_apply)


def build_parser() -> argparse.ArgumentParser:
    from opsflow.core.version import version_line

    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="opsflow", description="Prefect workflows for a small platform.",
        epilog=f"exit codes:\n{codes}", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the version and the commit of this code, then exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser("stack", help="start, inspect or stop the local platform on 127.0.0.1",
                           description="The Prefect server runs on a private PostgreSQL cluster under the "
                           "stack's home (Debian's binaries; SQLite with a warning when they are missing or with "
                           "--database sqlite). An external PostgreSQL URL is read from $OPSFLOW_DATABASE_URL only, "
                           "so its password never shows in a process list.")
    stack.add_argument("action", choices=["up", "status", "down", "registry-gc"],
                       help="up | status (exit 3 when unhealthy) | down | registry-gc: stop the registry, "
                       "garbage-collect its storage, start it again")
    _stack_options(stack)
    stack.set_defaults(func=_cmd_stack)

    demo = sub.add_parser("demo", help="bring the stack up and run the demo pipelines through Prefect",
                          description="Starts the local stack when it is not running, applies the deployments and "
                          "runs the GitOps pipeline on the sample shop (PR, then merge) and the MLOps pipeline on "
                          "the ML sample, printing artifact keys, test counts, image digests and each run's UI link.")
    _stack_options(demo)
    demo.set_defaults(func=_cmd_demo)

    apply_text = ("create the work pools, apply every deployment of deployments/prefect.yaml pinned to one "
                  "opsflow commit, and the notification automations")
    _apply_options(sub.add_parser("apply", help=apply_text, description=apply_text[0].upper() + apply_text[1:] + "."))
    _apply_options(sub.add_parser("deploy", help="old name of `apply` (says so, then runs it)",
                                  description="The old name of `opsflow apply`."))

    runs = sub.add_parser("runs", help="follow flow runs in the terminal", description="Flow runs, in the terminal.")
    runs_actions = runs.add_subparsers(dest="runs_action", required=True, metavar="ACTION")
    watch = runs_actions.add_parser(
        "watch", help="follow a run's states and logs until it ends (exit 0 Completed, 1 otherwise)",
        description="Follows a flow run as `gh run watch` does: prints each state change and every log line, "
        "until the run ends. Exit 0 when it completed, 1 when it failed, crashed or was cancelled.")
    watch.add_argument("run", help="a flow run id, or <flow>/<deployment> for that deployment's latest run")
    watch.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL, else the local stack's)")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between polls of the API (default 1)")
    watch.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: never)")
    _stack_options(watch)
    watch.set_defaults(func=_cmd_runs_watch)

    from opsflow.webhook.cli import register as register_webhook

    register_webhook(sub)
    from opsflow.worker.cli import register as register_worker

    register_worker(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
