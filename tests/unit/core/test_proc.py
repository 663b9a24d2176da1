import time

import pytest

from opsflow.core.errors import CommandFailed, InvalidInput
from opsflow.core.proc import run
from opsflow.stack.processes import alive


def test_run_returns_output_and_never_uses_a_shell(tmp_path):
    out = run(["echo", "a; rm -rf /"], cwd=tmp_path)
    assert out == "a; rm -rf /"


def test_shell_strings_are_refused():
    with pytest.raises(InvalidInput):
        run("echo hi")  # type: ignore[arg-type]


def test_failure_carries_redacted_tail_and_exit_code(tmp_path):
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", 'echo "token is $TOKEN"; exit 3'], cwd=tmp_path, env={"TOKEN": "ghp_supersecret1"},
            secrets=["ghp_supersecret1"])
    assert info.value.returncode == 3
    assert "ghp_supersecret1" not in str(info.value)
    assert "token is ***" in str(info.value)


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], cwd=tmp_path, timeout=1)
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not alive(child)  # gone, or a zombie waiting for init to reap it


def test_missing_program_says_so(tmp_path):
    with pytest.raises(CommandFailed, match="not installed"):
        run(["opsflow-no-such-program"], cwd=tmp_path)


def test_an_isolated_command_sees_only_the_scrubbed_environment(tmp_path, monkeypatch):
    from opsflow.core.proc import sandbox_prefix, scrubbed_environment

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("OPSFLOW_DATABASE_URL", "postgresql+asyncpg://u:pw-leak@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-leak")
    monkeypatch.setenv("LC_TIME", "C")
    env = scrubbed_environment(tmp_path, {"CI": "true"})
    out = run(["sh", "-c", "env; cat /proc/$PPID/environ 2>/dev/null | tr '\\0' '\\n'"], env=env, isolated=True)
    assert "PREFECT_API_URL" not in out and "pw-leak" not in out and "aws-leak" not in out
    assert f"HOME={tmp_path}" in out and "CI=true" in out and "LC_TIME=C" in out
    if sandbox_prefix():  # a PID namespace: the caller's processes are not there to read
        assert run(["sh", "-c", "echo $PPID"], env=env, isolated=True) == "0"


def test_an_isolated_command_needs_its_whole_environment():
    with pytest.raises(InvalidInput, match="whole environment"):
        run(["true"], env={"CI": "1"}, isolated=True)
