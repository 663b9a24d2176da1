"""The ``opsflow`` command line: --version, help on every option, one-line errors with documented exit codes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import httpx
import pytest

from opsflow.cli import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, build_parser, explain, main
from opsflow.core.errors import CommandFailed, InvalidInput, RemoteUnavailable
from opsflow.core.version import checkout_commit
from tests.support.paths import ROOT

UNREACHABLE = "http://127.0.0.1:1/api"


def _opsflow(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opsflow.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=ROOT)


def _parsers(parser: argparse.ArgumentParser, path: str = "opsflow"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if leaf and not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {c.dest}: no help" for c in action._choices_actions if not c.help]
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, missing


def test_version_names_the_commit(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert checkout_commit(ROOT) in capsys.readouterr().out


def test_errors_map_to_one_line_and_the_documented_codes():
    request = httpx.Request("GET", f"{UNREACHABLE}/health")
    message, code = explain(httpx.ConnectError("refused", request=request))
    assert code == EXIT_UNREACHABLE and "cannot reach" in message and "\n" not in message
    assert explain(RemoteUnavailable("registry down: retry"))[1] == EXIT_UNREACHABLE
    assert explain(InvalidInput("bad name: use another"))[1] == EXIT_FAILED
    message, code = explain(KeyError("boom"))
    assert code == EXIT_FAILED and message.startswith("KeyError:") and "--debug" in message


def test_a_failed_command_shows_its_output_tail_but_no_traceback(capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise CommandFailed(["prefect", "deploy"], 1, "line one\nline two", hint="check prefect.yaml")

    monkeypatch.setattr("opsflow.deploy.deploy_all", fail)
    assert main(["apply", "--api-url", UNREACHABLE]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("opsflow: error: `prefect deploy` exited with 1; check prefect.yaml\n")
    assert "  | line two" in err and "Traceback" not in err


def test_usage_errors_keep_argparse_code_2():
    assert _opsflow("apply", "--no-such-option").returncode == EXIT_USAGE


def test_deploy_with_an_unreachable_api_is_one_line_and_says_it_is_now_apply(capsys):
    done = _opsflow("deploy", "--api-url", UNREACHABLE)
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "`opsflow deploy` is now `opsflow apply`" in lines[0]
    assert lines[1:] == [f"opsflow: error: the Prefect API at {UNREACHABLE} does not answer (ConnectError): "
                         "start the server, or pass --api-url / set PREFECT_API_URL"]
    assert main(["apply", "--api-url", UNREACHABLE, "--debug"]) == EXIT_UNREACHABLE
    assert "Traceback" in capsys.readouterr().err


def test_webhook_serve_with_an_unreachable_api_is_one_line(tmp_path):
    done = _opsflow("webhook", "serve", "--forge-block", "github", "--port", "0", "--journal",
                    str(tmp_path / "j.sqlite3"), PREFECT_API_URL=UNREACHABLE)
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"opsflow: error: cannot reach the Prefect API at {UNREACHABLE} (ConnectError): start it, or point "
        "PREFECT_API_URL at a running server"]


@pytest.mark.parametrize("module, argv, what", [
    ("opsflow.worker", ["start", "--pool", "vault-build"], "the worker"),
    ("opsflow.webhook", ["serve", "--forge-block", "github", "--port", "0"], "the webhook receiver"),
])
def test_the_services_modules_end_as_the_opsflow_command_does(tmp_path, module, argv, what):
    """``python -m opsflow.worker|webhook`` (how a unit file starts them): no Prefect API configured is one line
    saying so, before anything starts; a usage error is argparse's, under the module's own name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # no profile with an API URL either
    done = subprocess.run([sys.executable, "-m", module, *argv, "--journal", str(tmp_path / "j.sqlite3")]
                          if module == "opsflow.webhook" else [sys.executable, "-m", module, *argv],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"opsflow: error: PREFECT_API_URL is not set: {what} needs the Prefect server's API, e.g. "
        "PREFECT_API_URL=http://vault:4200/api (and PREFECT_API_AUTH_STRING when the server has an auth string)"]
    assert not (tmp_path / "j.sqlite3").exists()  # nothing started
    usage = subprocess.run([sys.executable, "-m", module, argv[0], "--no-such-option"], capture_output=True,
                           text=True, timeout=120, env=env, cwd=ROOT)
    assert usage.returncode == EXIT_USAGE
    assert f"python -m {module} {argv[0]}: error: " in usage.stderr and "Traceback" not in usage.stderr
