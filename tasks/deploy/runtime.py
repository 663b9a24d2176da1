"""A release's runtime configuration made real at deploy time, and the checks a plan makes first.

Secrets (env files and secret files from Prefect ``Secret`` blocks) are read here, inside the
task that hands them to the engine or cluster; nothing returns them from a task (a task's result
may be persisted), and plans get only the variable names and a fingerprint (:func:`describe`).

The checks (:func:`docker_problems`, :func:`host_path_problems`) are pure: the plan runs them
against what the engine reports (``docker info``) before anything is stopped, so a CPU limit the
engine refuses or a bind mount outside the target's allowed roots fails the run, not the rollout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from pydantic import SecretStr

from blocks.application import RuntimeConfig
from blocks.fields import check_env_name, cpu_nanos, memory_bytes, path_under
from opsflow.core.errors import InvalidInput
from opsflow.core.redact import redact

# Docker refuses smaller limits: "Minimum memory limit allowed is 6MB"; a CPU quota below 1 ms of
# the 100 ms CFS period ("cpu.cfs_quota_us: invalid argument", "Range of CPUs is from 0.01 to N").
DOCKER_MIN_MEMORY = 6 * 2**20
DOCKER_MIN_NANO_CPUS = 10_000_000


@dataclass(frozen=True)
class RuntimeValues:
    """The secret half of a runtime configuration, read from its Secret blocks.

    ``secret_env``: variables from the env files; ``files``: container path -> (content, mode).
    """

    secret_env: dict[str, SecretStr] = field(default_factory=dict)
    files: dict[str, tuple[SecretStr, int]] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)  # Secret block -> variable names it sets
    fingerprint: str = ""

    def env(self, runtime: RuntimeConfig) -> dict[str, str]:
        """Every variable the container gets: the plain ones, then the env files' (they win)."""
        return {**runtime.env, **{k: v.get_secret_value() for k, v in self.secret_env.items()}}

    def secrets(self) -> list[str]:
        """Every secret value, for redaction (each line of a multi-line one too)."""
        values: list[str] = []
        for secret in [*self.secret_env.values(), *(content for content, _ in self.files.values())]:
            text = secret.get_secret_value()
            values += [text, *(line.strip() for line in text.splitlines())]
        return [v for v in values if v]

    def redact(self, text: str) -> str:
        return redact(text, self.secrets())


def parse_env_text(text: str, where: str) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (``export`` prefixes, comments, single/double quotes).

    Errors name ``where`` and the line number, never the line (it may hold a secret).
    """
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^export\s+", "", line)
        if "=" not in line:
            raise InvalidInput(f"{where}, line {number}: not KEY=VALUE; fix the Secret block's text")
        key, value = (part.strip() for part in line.split("=", 1))
        try:
            check_env_name(key)
        except InvalidInput:
            raise InvalidInput(f"{where}, line {number}: the variable name is not valid (letters, digits, '_', "
                               "not starting with a digit)") from None
        closing = value.find(value[0], 1) if value[:1] in ("'", '"') else -1
        if closing > 0:  # a quoted value; what follows the closing quote is a comment
            value = value[1:closing]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        found[key] = value
    return found


def _load_secret(block: str, where: str):
    from prefect.blocks.system import Secret

    try:
        # _sync: called in a thread of the async manual-deploy flow (the compose diff), where Prefect's
        # dispatch would hand back a coroutine.
        return Secret.load(block, _sync=True).get()
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"{where}: there is no readable Secret block named {block!r}; create it in the Prefect "
                           "UI (Blocks > Secret) or fix the name") from exc


def load_runtime(runtime: RuntimeConfig, where: str) -> RuntimeValues:
    """Read the Secret blocks ``runtime`` names. ``where`` names the config in errors
    (e.g. ``components[web].runtime``). Raises InvalidInput for a missing block or a bad env file."""
    secret_env: dict[str, SecretStr] = {}
    names: dict[str, list[str]] = {}
    digest = hashlib.sha256()
    for i, block in enumerate(runtime.env_files):
        field_name = f"{where}.env_files[{i}] ({block})"
        value = _load_secret(block, field_name)
        if isinstance(value, dict):
            pairs = {str(k): str(v) for k, v in value.items()}
            for key in pairs:
                try:
                    check_env_name(key)
                except InvalidInput:
                    raise InvalidInput(f"{field_name}: a key is not a valid variable name") from None
        elif isinstance(value, str):
            pairs = parse_env_text(value, field_name)
        else:
            raise InvalidInput(f"{field_name}: the Secret must hold .env text or a JSON object")
        names[block] = sorted(pairs)
        secret_env.update({k: SecretStr(v) for k, v in pairs.items()})
        digest.update(block.encode() + b"\0" + repr(sorted(pairs.items())).encode() + b"\0")
    files: dict[str, tuple[SecretStr, int]] = {}
    for i, secret_file in enumerate(runtime.secret_files):
        field_name = f"{where}.secret_files[{i}] ({secret_file.secret_block})"
        value = _load_secret(secret_file.secret_block, field_name)
        if not isinstance(value, str):
            raise InvalidInput(f"{field_name}: a secret file's Secret must hold text, not JSON")
        files[secret_file.path] = (SecretStr(value), secret_file.mode)
        digest.update(secret_file.path.encode() + b"\0" + value.encode() + b"\0")
    fingerprint = "sha256:" + digest.hexdigest()[:12] if (secret_env or files) else ""
    return RuntimeValues(secret_env=secret_env, files=files, names=names, fingerprint=fingerprint)


def describe(runtime: RuntimeConfig, values: RuntimeValues) -> dict:
    """What a plan shows of the runtime configuration: plain values, secret names and the fingerprint."""
    shown: dict = {}
    if runtime.env:
        shown["env"] = dict(runtime.env)
    if values.names:
        shown["env_from_secrets"] = values.names
    if runtime.secret_files:
        shown["secret_files"] = {f.path: f.secret_block for f in runtime.secret_files}
    if values.fingerprint:
        shown["secrets_fingerprint"] = values.fingerprint
    for key in ("command", "args", "restart_policy", "init"):
        if getattr(runtime, key) is not None:
            shown[key] = getattr(runtime, key)
    if runtime.volumes:
        shown["volumes"] = [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in runtime.volumes]
    if runtime.labels:
        shown["labels"] = dict(runtime.labels)
    if runtime.networks:
        shown["networks"] = list(runtime.networks)
    return shown


def placeholder_env(runtime: RuntimeConfig, values: RuntimeValues) -> dict[str, str]:
    """The container environment as a plan shows it: secret values replaced by where they come from."""
    shown = dict(runtime.env)
    for block, keys in values.names.items():
        shown.update({k: f"<secret {block} {values.fingerprint}>" for k in keys})
    return shown


def host_path_problems(runtime: RuntimeConfig, allowed: list[str], where: str, target: str) -> list[str]:
    """Bind mounts outside the target's ``allowed_host_paths``."""
    return [f"{where}.volumes[{i}]: host path {v.source} is not under an allowed root of {target} "
            f"({', '.join(allowed) or 'none: set allowed_host_paths on the target block'})"
            for i, v in enumerate(runtime.volumes) if v.is_host_path and not path_under(v.source, allowed)]


def docker_problems(cpu: str, memory: str, engine_info: dict, where: str, target: str) -> list[str]:
    """CPU and memory limits the engine would refuse at container create: below its minimums or above
    what the host has (``docker info``'s NCPU and MemTotal)."""
    problems = []
    nanos, mem = cpu_nanos(cpu), memory_bytes(memory)
    cpus = int(engine_info.get("NCPU") or 0)
    total = int(engine_info.get("MemTotal") or 0)
    if nanos < DOCKER_MIN_NANO_CPUS:
        problems.append(f"{where}.cpu {cpu} is below the engine's minimum of 10m (0.01 CPU)")
    if cpus and nanos > cpus * 1_000_000_000:
        problems.append(f"{where}.cpu {cpu} is more than {target} has ({cpus} CPUs)")
    if mem < DOCKER_MIN_MEMORY:
        problems.append(f"{where}.memory {memory} is below the engine's minimum of 6Mi")
    if total and mem > total:
        problems.append(f"{where}.memory {memory} is more than {target} has ({total / 2**20:.0f}Mi)")
    return problems
