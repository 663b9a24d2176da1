"""The one exception tree of opsflow. Messages say what failed and what to do next.

Whether trying again may help is a class, not an attribute: :class:`TransientError` (and its
subclasses) are worth a retry (a network failure, a busy service), everything else is permanent
until something is changed. Library errors are translated at the edge with ``raise ... from exc``
(or ``from None`` where the cause would carry a secret).
"""

from __future__ import annotations

from opsflow.core.redact import redact


class OpsflowError(Exception):
    """Base class of every error opsflow raises on purpose.

    Its message is redacted when it is made: no value registered as a secret (``opsflow.core.redact``)
    reaches a state message, an event or a log through an opsflow exception.
    """

    def __init__(self, *args: object):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class TransientError(OpsflowError):
    """A failure that may pass when tried again later (network, timeouts, a busy or restarting service)."""


class InvalidInput(OpsflowError, ValueError):
    """A name, ref, path, URL or quantity from input was rejected before any side effect."""


class CommandFailed(OpsflowError):
    """An external command exited non-zero or timed out. Output is already redacted."""

    def __init__(self, argv: list[str], returncode: int | None, output_tail: str, hint: str = ""):
        self.argv = argv
        self.returncode = returncode
        self.output_tail = output_tail
        what = "timed out" if returncode is None else f"exited with {returncode}"
        msg = f"`{' '.join(argv)}` {what}"
        if hint:
            msg += f"; {hint}"
        if output_tail:
            msg += f"\n--- last output ---\n{output_tail}"
        super().__init__(msg)


class ServiceError(OpsflowError):
    """A service of the local stack failed to start, answer or stop."""

    def __init__(self, service: str, reason: str, log_tail: str = ""):
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        msg = f"{service}: {reason}"
        if log_tail:
            msg += f"\n--- {service} log tail ---\n{log_tail}"
        super().__init__(msg)


class RemoteError(OpsflowError):
    """A remote endpoint (registry, object store, forge, engine) refused or failed after retries."""


class RemoteUnavailable(RemoteError, TransientError):
    """A remote endpoint could not be reached or was busy (connection reset, timeout, 5xx): retry later."""


class DeployFailed(OpsflowError):
    """A new version did not become healthy; what ran before was put back."""


class DeletesDisabled(RemoteError):
    """The registry refuses deletes (CNCF distribution without storage.delete.enabled)."""


class RegistryAuthError(RemoteError):
    """The registry or its token service refused the credentials; the message names the registry and the user."""


class RegistryTlsError(RemoteError):
    """The registry's TLS certificate is not trusted; the message names the block's CA setting."""


class CatalogRefused(RemoteError):
    """The registry will not list its repositories to this user (``/v2/_catalog``; Harbor robot accounts)."""


class RegistryBroken(RemoteError):
    """A tag the cleanup kept no longer resolves or pulls (after garbage collection); the message lists them."""


class MlopsError(OpsflowError):
    """An MLOps step failed; the message says what happened and what to do."""


class ExperimentFailed(MlopsError):
    """An ML repository's experiment (or the build of its environment) failed; ``last_lines`` is the end of its
    output, already redacted, shown in the PR comment and the run's state message."""

    def __init__(self, message: str, last_lines: list[str]):
        self.summary = message
        self.last_lines = list(last_lines)
        tail = "\n".join(self.last_lines)
        super().__init__(f"{message}\n--- last output ---\n{tail}" if tail else message)

    def __reduce__(self):  # results and states are pickled: rebuild from both parts, not from str(self)
        return type(self), (self.summary, self.last_lines)


class ApprovalNotGiven(MlopsError):
    """Nobody resumed the paused run in time; the champion alias did not move."""


class BuildFailed(OpsflowError):
    """A component's build command failed or produced no output."""


class TestsFailed(OpsflowError):
    """Tests of a component failed; ``report`` (a ``tasks.app_tests.TestReport``) says which."""

    __test__ = False  # not a pytest test class

    def __init__(self, report, detail: str = ""):
        self.report = report
        names = ", ".join(report.failed_names[:10]) or detail or f"exit code {report.exit_code}"
        super().__init__(f"tests of {report.component!r} failed: {names}")


class ArtifactNotFound(OpsflowError):
    """No complete artifact is stored under the key."""


class ArtifactCorrupt(OpsflowError):
    """The stored archive does not match the checksum in its metadata."""


class PipelineFailed(OpsflowError):
    """One or more components failed; the report says which and why."""


class LockTimeout(OpsflowError, TimeoutError):
    """A lock (a deploy's ``deploy-<app>-<target>``) stayed held by another run past the wait's deadline."""


class LockMissing(RemoteError):
    """A lock (a Prefect global concurrency limit) that does not exist yet and was not to be created."""


class InvalidDelivery(InvalidInput):
    """A webhook delivery is malformed; the message names the field."""


class ZygoteError(OpsflowError):
    """The worker's zygote could not be started or stopped answering."""
