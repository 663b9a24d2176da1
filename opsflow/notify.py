"""Notifications through Prefect automations: failed or crashed opsflow runs, runs held for approval.

``opsflow apply --notify-block <type>/<name>`` creates (or updates, by name) two automations on
the server, each sending to that Prefect notification block (Slack webhook, Microsoft Teams,
custom webhook, email through an Apprise or SendGrid block, ...):

- ``opsflow: run failed`` — a run of any opsflow deployment (tag ``opsflow``) ends ``Failed`` or
  ``Crashed``: a failed nightly cleanup, a failed or rolled-back deploy, a broken build.
- ``opsflow: run held for approval`` — a run pauses waiting for a person (a manual deploy with
  ``approve``, an MLOps champion approval).

The server renders and sends them (Prefect's own automations service), so nothing here runs
when a run fails. A notification carries the deployment, the run's name, its state and message
and its link in the UI, never its parameters: opsflow's error messages are redacted at the
source (``opsflow.core.redact``) and parameters are left out so nothing secret can ride along.
"""

from __future__ import annotations

from uuid import UUID

from opsflow.core.errors import InvalidInput

#: The tag every deployment of deployments/prefect.yaml carries (and so every run of them).
OPSFLOW_TAG = "opsflow"
FAILED_NAME = "opsflow: run failed"
HELD_NAME = "opsflow: run held for approval"

_RUN_LINES = (
    "Deployment: {{ flow.name }}/{{ deployment.name }} (version {{ deployment.version }})\n"
    "Flow run: {{ flow_run.name }}\n"
    "State: {{ flow_run.state.name }}{% if flow_run.state.message %}: {{ flow_run.state.message }}{% endif %}\n"
    "Link: {{ flow_run|ui_url }}\n"
)
FAILED_SUBJECT = "opsflow: {{ flow_run.name }} {{ flow_run.state.name|lower }}"
FAILED_BODY = ("An opsflow run ended {{ flow_run.state.name }}.\n" + _RUN_LINES
               + "The run's logs in the UI say which step failed and what to do.")
HELD_SUBJECT = "opsflow: {{ flow_run.name }} waits for approval"
HELD_BODY = ("An opsflow run is paused until someone approves it (Resume in the UI) or its timeout passes.\n"
             + _RUN_LINES)


def parse_block_ref(ref: str) -> tuple[str, str]:
    """``"slack-webhook/alerts"`` → ``("slack-webhook", "alerts")``; anything else is rejected, naming the option."""
    slug, _, name = ref.strip().partition("/")
    if not slug or not name or "/" in name:
        raise InvalidInput(f"--notify-block must be <block type slug>/<block name> (e.g. slack-webhook/platform), "
                           f"not {ref!r}")
    return slug, name


def automation_specs(block_document_id: UUID, tag: str = OPSFLOW_TAG) -> list:
    """The two automations (``AutomationCore``), sending to the block ``block_document_id``. Pure."""
    from datetime import timedelta

    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    def on(events: set[str], name: str, description: str, subject: str, body: str) -> AutomationCore:
        return AutomationCore(
            name=name, description=description, enabled=True,
            trigger=EventTrigger(
                expect=events,
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"},
                posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            actions=[SendNotification(block_document_id=block_document_id, subject=subject, body=body)])

    return [
        on({"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}, FAILED_NAME,
           "Created by `opsflow apply`: a run of an opsflow deployment failed or crashed.",
           FAILED_SUBJECT, FAILED_BODY),
        on({"prefect.flow-run.Paused"}, HELD_NAME,
           "Created by `opsflow apply`: an opsflow run waits for approval.", HELD_SUBJECT, HELD_BODY),
    ]


def notification_block(ref: str):
    """The block document named by ``ref`` (``<type slug>/<name>``); it must exist and be able to notify.

    Raises:
        InvalidInput: malformed reference, no such block, or a block that cannot send notifications.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug, name = parse_block_ref(ref)
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, block_type_slug=slug, include_secrets=False)
        except ObjectNotFound:
            raise InvalidInput(f"no notification block {slug}/{name} on the server: create it in the UI "
                               "(Blocks → + → e.g. Slack Webhook or Custom Webhook) or name another") from None
    capabilities = set(document.block_schema.capabilities if document.block_schema else [])
    if "notify" not in capabilities:
        raise InvalidInput(f"block {slug}/{name} cannot send notifications (its type has no 'notify' capability): "
                           "name a Slack Webhook, Microsoft Teams, Custom Webhook or email block")
    return document


def apply_automations(document, tag: str = OPSFLOW_TAG) -> list[str]:
    """Create or update the automations sending to ``document``; returns what it did, one line each."""
    from prefect.client.orchestration import get_client

    done = []
    ref = f"{document.block_type.slug if document.block_type else '?'}/{document.name}"
    with get_client(sync_client=True) as client:
        for spec in automation_specs(document.id, tag):
            existing = client.read_automations_by_name(spec.name)
            if existing:
                client.update_automation(existing[0].id, spec)
                for extra in existing[1:]:  # two of one name (created by hand): keep one
                    client.delete_automation(extra.id)
                done.append(f"automation {spec.name!r} → {ref}: updated")
            else:
                client.create_automation(spec)
                done.append(f"automation {spec.name!r} → {ref}: created")
    return done
