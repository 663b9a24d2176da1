"""How every opsflow command ends: one line on stderr and an exit code, for ``opsflow`` and for the services'
``python -m opsflow.worker`` / ``python -m opsflow.webhook`` alike.

Errors are one line (``opsflow: error: <what failed>: <what to do>``), with the output or log tail of a failed
command or service below it; the traceback only with ``--debug``. Exit codes (:data:`EXIT_CODES`): 0 done,
1 failed, 2 usage error (argparse's), 3 unhealthy (``stack status``), 4 a service could not be reached (try
again once it answers), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from opsflow.core.errors import CommandFailed, OpsflowError, ServiceError, TransientError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNHEALTHY, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "the command failed (the message says what to do)",
    EXIT_USAGE: "usage error: an unknown option or a missing argument",
    EXIT_UNHEALTHY: "`stack status`: a service is unhealthy or no stack is recorded",
    EXIT_UNREACHABLE: "a service (the Prefect API, an engine) could not be reached: try again once it answers",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def module_parser(module: str, command: str, add_actions: Callable[[Any], None]) -> argparse.ArgumentParser:
    """``python -m <module>``'s own command line: the actions of ``opsflow <command>`` (``add_actions`` adds them to a
    subparsers object), with usage errors under the module's name."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}",
                                     description=f"The same as `opsflow {command}` (--debug: an error's traceback).")
    add_actions(parser.add_subparsers(dest=f"{command}_action", required=True))
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse ``argv`` (``--debug`` anywhere on the line), call the chosen command's ``func`` and turn any error
    into one line and an exit code."""
    debug = "--debug" in argv  # accepted anywhere on the line, also after the command
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line and an exit code
        if debug:
            traceback.print_exc()
        message, code = explain(exc)
        head, _, tail = message.partition("\n")
        print(f"opsflow: error: {head}", file=sys.stderr)
        if tail and isinstance(exc, (CommandFailed, ServiceError)):
            print("\n".join(f"  | {line}" for line in tail.splitlines()), file=sys.stderr)
        return code


def explain(exc: BaseException) -> tuple[str, int]:
    """One line saying what failed and what to do, and the exit code, for any error a command raises."""
    import httpx

    api = os.environ.get("PREFECT_API_URL", "the Prefect API")
    if isinstance(exc, OpsflowError):
        return str(exc), EXIT_UNREACHABLE if isinstance(exc, TransientError) else EXIT_FAILED
    if isinstance(exc, (httpx.ConnectError, httpx.TimeoutException, ConnectionError)):
        where = str(exc.request.url) if isinstance(exc, httpx.RequestError) and _has_request(exc) else api
        if where.startswith(api):
            where = f"the Prefect API at {api}"
        return (f"cannot reach {where} ({type(exc).__name__}): start it, or point PREFECT_API_URL at a running "
                "server"), EXIT_UNREACHABLE
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"{api} refused the request ({status}): set PREFECT_API_AUTH_STRING to the server's auth string"
                ), EXIT_FAILED
    if isinstance(status, int) and status >= 500:
        return f"{api} answered {status}: the server has a problem (see its log); try again", EXIT_UNREACHABLE
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first} (run again with --debug for the traceback)", EXIT_FAILED


def _has_request(exc: Exception) -> bool:
    try:
        exc.request  # noqa: B018 - httpx raises RuntimeError when the error carries no request
    except RuntimeError:
        return False
    return True


def require_prefect_api(what: str) -> None:
    """Raise InvalidInput, before anything starts, when no Prefect API is configured for ``what`` (a service
    that talks to it): ``PREFECT_API_URL`` from the environment or the active Prefect profile."""
    from prefect.settings import PREFECT_API_URL

    from opsflow.core.errors import InvalidInput

    if not PREFECT_API_URL.value():
        raise InvalidInput(f"PREFECT_API_URL is not set: {what} needs the Prefect server's API, e.g. "
                           "PREFECT_API_URL=http://vault:4200/api (and PREFECT_API_AUTH_STRING when the server "
                           "has an auth string)")
