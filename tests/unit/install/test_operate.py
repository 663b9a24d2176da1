"""Notification automations, database retention and `runs watch` lines, without a server."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from opsflow.core.errors import InvalidInput
from opsflow.core.retention import DEFAULT_RUN_RETENTION_DAYS, retention_days, server_retention_env
from opsflow.notify import FAILED_NAME, HELD_NAME, automation_specs, parse_block_ref
from opsflow.runs import exit_code, log_line, state_line


def test_notify_block_reference_is_type_slash_name():
    assert parse_block_ref("slack-webhook/platform") == ("slack-webhook", "platform")
    for bad in ("platform", "/x", "slack-webhook/", "a/b/c"):
        with pytest.raises(InvalidInput, match="--notify-block must be"):
            parse_block_ref(bad)


def test_automations_react_to_failed_crashed_and_paused_opsflow_runs_without_parameters():
    block = uuid.uuid4()
    failed, held = automation_specs(block)
    assert (failed.name, held.name) == (FAILED_NAME, HELD_NAME)
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert held.trigger.expect == {"prefect.flow-run.Paused"}
    for automation in (failed, held):
        assert automation.trigger.posture == "Reactive" and automation.trigger.threshold == 1
        related = automation.trigger.match_related.model_dump()
        assert related == {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.opsflow"}
        [action] = automation.actions
        assert action.block_document_id == block
        for text in (action.subject, action.body):
            assert "flow_run.name" in text and "parameters" not in text
        assert "flow_run|ui_url" in action.body


def test_retention_defaults_and_prefect_reads_them(monkeypatch):
    from prefect.settings import Settings

    monkeypatch.delenv("OPSFLOW_RUN_RETENTION_DAYS", raising=False)
    env = server_retention_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    vacuum = settings.server.services.db_vacuum
    assert {"flow_runs", "events"} <= vacuum.enabled_vacuum_types
    assert vacuum.retention_period == dt.timedelta(days=DEFAULT_RUN_RETENTION_DAYS)
    assert settings.server.events.retention_period == dt.timedelta(days=7)
    monkeypatch.setenv("OPSFLOW_RUN_RETENTION_DAYS", "90")
    assert retention_days() == 90
    for bad in ("0", "-3", "a month"):
        monkeypatch.setenv("OPSFLOW_RUN_RETENTION_DAYS", bad)
        with pytest.raises(InvalidInput, match="OPSFLOW_RUN_RETENTION_DAYS"):
            retention_days()


def test_the_stack_and_compose_run_prefect_with_retention(tmp_path):
    import yaml

    from opsflow.stack.config import StackConfig
    from opsflow.stack.services import build_specs
    from tests.support.paths import ROOT

    specs = build_specs(StackConfig(home=tmp_path), {"s3_access_key": "a", "s3_secret_key": "b"}, "unix:///x.sock")
    env = specs["prefect"].env
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == str(DEFAULT_RUN_RETENTION_DAYS * 86400)
    compose = yaml.safe_load((ROOT / "deployments" / "compose.yaml").read_text())["services"]["prefect"]["environment"]
    assert compose["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs"
    period = compose["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"]
    assert period.endswith(f":-{DEFAULT_RUN_RETENTION_DAYS * 86400}}}")


def test_watch_lines_and_exit_codes():
    at = dt.datetime(2026, 1, 1, 12, 0, 5, tzinfo=dt.UTC)
    assert state_line(at, "Failed", "deploy failed: rolled back\nmore").endswith("● Failed: deploy failed: rolled back")
    line = log_line(at, 40, "first\nsecond")
    assert "ERROR" in line and line.splitlines()[1].strip() == "second"
    assert exit_code("COMPLETED") == 0
    assert {exit_code(s) for s in ("FAILED", "CRASHED", "CANCELLED")} == {1}
