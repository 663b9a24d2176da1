"""The one exception tree of opsflow. Messages say what failed and what to do next."""

from __future__ import annotations


class OpsflowError(Exception):
    """Base class of every error opsflow raises on purpose."""


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
    """A remote endpoint (registry, object store, forge, engine) failed after retries."""


class DeployFailed(OpsflowError):
    """A new version did not become healthy; what ran before was put back."""


class DeletesDisabled(OpsflowError):
    """The registry refuses deletes (CNCF distribution without storage.delete.enabled)."""


class MlopsError(OpsflowError):
    """An MLOps step failed; the message says what happened and what to do."""
