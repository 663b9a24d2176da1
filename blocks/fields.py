"""Every constrained value opsflow accepts, defined once: names, URLs, secrets, paths, quantities, commands,
commits, branches, image tags and digests, forge repositories, PR numbers, status texts.

Each is a ``check_*`` function (raising :class:`InvalidInput` with what is wrong and what to use) and an
``Annotated`` type for blocks and flow parameters (the JSON schema pattern makes the Prefect UI's run
form check the value as the user types). The webhook, the forge clients and the tasks call the same
functions.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from opsflow.core.errors import InvalidInput

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


def check_name(value: str) -> str:
    """A resource name: lowercase letters, digits, ``.``, ``_``, ``-``; 1-63 chars."""
    if not NAME_RE.fullmatch(value or ""):
        raise InvalidInput(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits, '.', '_' or '-',"
            " starting and ending with a letter or digit"
        )
    return value


def check_url(value: str, schemes: tuple[str, ...] = ("http", "https"), allow_user: bool = False) -> str:
    """An absolute URL with one of ``schemes`` and a host, without embedded credentials.

    ``allow_user`` permits a bare user name (``ssh://deploy@host``), never a password.
    """
    parts = urlsplit(value or "")
    if parts.scheme not in schemes or not parts.hostname:
        raise InvalidInput(f"{value!r} is not a valid URL: expected {'/'.join(schemes)}://host[:port][/path]")
    if parts.password or (parts.username and not allow_user):
        raise InvalidInput("credentials must not be embedded in a URL; use the block's secret fields")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidInput(f"{value!r} has an invalid port") from exc
    return value.rstrip("/")


def check_secret(value: SecretStr | None) -> SecretStr | None:
    """A secret, when given, may not be empty or blank."""
    if value is not None and not value.get_secret_value().strip():
        raise InvalidInput("must not be empty or blank")
    return value


def check_relative_path(value: str) -> str:
    """A path inside a checkout: relative, no ``..``, no NUL."""
    if not value or "\0" in value or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise InvalidInput(f"{value!r} must be a relative path inside the repository")
    if any(part == ".." for part in re.split(r"[\\/]", value)):
        raise InvalidInput(f"{value!r} must not contain '..'")
    return value


# The JSON schema hints make the Prefect UI's run form check the value as the user types.
Name = Annotated[str, AfterValidator(check_name), Field(json_schema_extra={"pattern": NAME_RE.pattern})]
HttpUrl = Annotated[str, AfterValidator(check_url)]
Secret = Annotated[SecretStr | None, AfterValidator(check_secret)]
RequiredSecret = Annotated[SecretStr, AfterValidator(check_secret)]
RelativePath = Annotated[str, AfterValidator(check_relative_path)]

ENV_KEY_PATTERN_RE = re.compile(r"^[A-Za-z_*?][A-Za-z0-9_.*?-]{0,127}$")


def check_env_key_pattern(value: str) -> str:
    """An environment variable name or a glob over names (``PUBLIC_*``)."""
    if not ENV_KEY_PATTERN_RE.fullmatch(value or ""):
        raise InvalidInput(f"{value!r} is not a variable name pattern: use letters, digits, '_', '.', '-' and "
                           "the globs '*' and '?', e.g. PUBLIC_*")
    return value


def check_relative_glob(value: str) -> str:
    """A glob inside a checkout (``reports/*.xml``, ``**/junit.xml``): a relative path that may hold ``*?[]``."""
    return check_relative_path(value)


EnvKeyPattern = Annotated[str, AfterValidator(check_env_key_pattern),
                          Field(json_schema_extra={"pattern": ENV_KEY_PATTERN_RE.pattern})]
RelativeGlob = Annotated[str, AfterValidator(check_relative_glob)]


_CPU_RE = re.compile(r"^(?:[0-9]+m|[0-9]+(?:\.[0-9]{1,3})?)$")
_MEMORY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def check_cpu(value: str) -> str:
    """A Kubernetes CPU quantity: ``500m``, ``1``, ``1.5``; must be more than zero."""
    if not _CPU_RE.fullmatch(value or "") or float(value.rstrip("m") or 0) <= 0:
        raise InvalidInput(f"{value!r} is not a CPU quantity: use e.g. '250m', '1' or '1.5'")
    return value


def check_memory(value: str) -> str:
    """A Kubernetes memory quantity: ``128Mi``, ``1Gi``, ``500M``; must be more than zero."""
    if not _MEMORY_RE.fullmatch(value or "") or float(re.match(r"[0-9.]+", value).group()) <= 0:
        raise InvalidInput(f"{value!r} is not a memory quantity: use e.g. '128Mi', '1Gi' or '500M'")
    return value


def check_argv(value: list[str]) -> list[str]:
    """A command as an argv list: at least one element, no empty program, no NUL bytes."""
    if not value or not value[0].strip():
        raise InvalidInput("a command must be a non-empty list of arguments, e.g. ['npm', 'run', 'build']")
    if any("\0" in arg for arg in value):
        raise InvalidInput("command arguments must not contain NUL bytes")
    return value


Cpu = Annotated[str, AfterValidator(check_cpu)]
Memory = Annotated[str, AfterValidator(check_memory)]
Argv = Annotated[list[str], AfterValidator(check_argv)]


SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def check_sha(value: str) -> str:
    """A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex characters."""
    if not SHA_RE.fullmatch(value or ""):
        raise InvalidInput(f"{value!r} is not a full commit SHA (40 or 64 lowercase hex characters)")
    return value


def check_branch(value: str) -> str:
    """A branch or tag name git accepts, without shell or revision-syntax characters."""
    if (not _BRANCH_RE.fullmatch(value or "") or ".." in value or "//" in value or value.endswith((".", "/", ".lock"))
            or "/." in value or value.startswith("-")):
        raise InvalidInput(f"{value!r} is not a valid branch name: letters, digits, '.', '_', '-', '/' only, no '..'")
    return value


Sha = Annotated[str, AfterValidator(check_sha), Field(json_schema_extra={"pattern": SHA_RE.pattern})]
Branch = Annotated[str, AfterValidator(check_branch), Field(json_schema_extra={"pattern": _BRANCH_RE.pattern})]


# --- forges: repositories, pull request numbers, statuses and comments -------------------------------
MAX_CONTEXT = 255
MAX_DESCRIPTION = 140  # GitHub's limit (422 above it); the others allow more
MAX_BODY = 65536  # GitHub's limit for a comment body; the smallest of the three
MAX_PR = 10**9
_PART = r"[A-Za-z0-9_.-]{1,255}"
_REPO_RE = re.compile(rf"^{_PART}/{_PART}$")
_NESTED_REPO_RE = re.compile(rf"^{_PART}(?:/{_PART}){{1,20}}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_repo(repo: str, nested: bool = False) -> str:
    """``owner/name`` (``nested``: also ``group/sub/name``) of letters, digits, ``.``, ``_``, ``-``."""
    pattern = _NESTED_REPO_RE if nested else _REPO_RE
    if not isinstance(repo, str) or not pattern.fullmatch(repo) or any(not p.strip(".") for p in repo.split("/")):
        shape = "group[/subgroup...]/name" if nested else "owner/name"
        raise InvalidInput(f"{repo!r} is not a repository path: use {shape} with letters, digits, '.', '_', '-'")
    return repo


def check_number(value: int, what: str) -> int:
    """A positive integer (a PR number or a comment id); booleans and strings are refused."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInput(f"{value!r} is not a valid {what}: expected a positive integer")
    return value


def check_context(context: str) -> str:
    """A status context: 1-255 characters on one line."""
    if not isinstance(context, str) or not context.strip() or len(context) > MAX_CONTEXT or _CONTROL_RE.search(context):
        raise InvalidInput(f"{context!r} is not a valid status context: use 1-{MAX_CONTEXT} characters on one line")
    return context


def check_description(description: str) -> str:
    """A status description of at most 140 characters (truncate before calling)."""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"a status description must be text of at most {MAX_DESCRIPTION} characters")
    return description


def check_body(body: str) -> str:
    """A comment body: non-blank markdown of at most 65536 characters."""
    if not isinstance(body, str) or not body.strip() or len(body) > MAX_BODY:
        raise InvalidInput(f"a comment body must be non-blank text of at most {MAX_BODY} characters")
    return body


def check_pr_number(value: int) -> int:
    """A pull request (GitLab: merge request) number: a positive integer below 10**9."""
    check_number(value, "pull request number")
    if value >= MAX_PR:
        raise InvalidInput(f"{value!r} is not a valid pull request number: expected a positive integer below {MAX_PR}")
    return value


def check_forge_repo(value: str) -> str:
    """A repository on any forge: ``owner/name`` or GitLab's ``group/sub/name``."""
    return check_repo(value, nested=True)


ForgeRepo = Annotated[str, AfterValidator(check_forge_repo),
                      Field(json_schema_extra={"pattern": _NESTED_REPO_RE.pattern})]
PrNumber = Annotated[int, Field(gt=0, lt=10**9, description="Pull request number.")]


# --- images: repositories, tags, digests ------------------------------------------------------------
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_PATH_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


def check_tag(value: str) -> str:
    """An image tag Docker accepts: letters, digits, ``_ . -``, at most 128, not starting with ``.`` or ``-``."""
    if not isinstance(value, str) or not TAG_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a valid image tag: use letters, digits, '_', '.', '-' "
                           "(max 128, not starting with '.' or '-')")
    return value


def check_digest(value: str) -> str:
    """A content digest ``sha256:<64 lowercase hex>``."""
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a digest: expected sha256:<64 lowercase hex characters>")
    return value


def check_tag_or_digest(value: str) -> str:
    """An image tag or a ``sha256:`` digest."""
    if isinstance(value, str) and value.startswith("sha256:"):
        return check_digest(value)
    return check_tag(value)


def check_image_path(value: str) -> str:
    """A repository path inside a registry (``team/app``): lowercase components separated by ``/``."""
    if not isinstance(value, str) or not IMAGE_PATH_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a valid image repository (lowercase name components separated by '/')")
    return value


ImageTag = Annotated[str, AfterValidator(check_tag), Field(json_schema_extra={"pattern": TAG_RE.pattern})]
Digest = Annotated[str, AfterValidator(check_digest), Field(json_schema_extra={"pattern": DIGEST_RE.pattern})]
TagOrDigest = Annotated[str, AfterValidator(check_tag_or_digest), Field(json_schema_extra={
    "pattern": f"{TAG_RE.pattern[:-1]}|{DIGEST_RE.pattern[1:]}"})]


# --- HTTP paths and block names ----------------------------------------------------------------------
HTTP_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/?=&%-]*$")
BLOCK_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$")


def check_http_path(value: str) -> str:
    """An absolute HTTP path (and query) of URL-safe characters, e.g. ``/healthz``."""
    if not isinstance(value, str) or not HTTP_PATH_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not an HTTP path: start with '/' and use letters, digits and ._~/?=&%-")
    return value


def check_block_name(value: str) -> str:
    """A Prefect block document name: lowercase letters, digits and dashes."""
    if not isinstance(value, str) or not BLOCK_NAME_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a block name: use lowercase letters, digits and '-' (as Prefect does)")
    return value


HttpPath = Annotated[str, AfterValidator(check_http_path), Field(json_schema_extra={"pattern": HTTP_PATH_RE.pattern})]
BlockName = Annotated[str, AfterValidator(check_block_name),
                      Field(json_schema_extra={"pattern": BLOCK_NAME_RE.pattern})]


# --- quantities: conversions for every value the types above accept ---------------------------------
_MEMORY_FACTORS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def cpu_nanos(value: str) -> int:
    """A CPU quantity (:data:`Cpu`) in billionths of a CPU, as Docker's ``NanoCpus`` takes it."""
    check_cpu(value)
    return int(value[:-1]) * 1_000_000 if value.endswith("m") else round(float(value) * 1_000_000_000)


def memory_bytes(value: str) -> int:
    """A memory quantity (:data:`Memory`) in bytes, rounded up as Kubernetes does (``1.5k`` is 1500)."""
    check_memory(value)
    number = re.match(r"[0-9.]+", value).group()
    suffix = value[len(number):]
    whole, _, frac = number.partition(".")
    factor = _MEMORY_FACTORS[suffix]
    # Exact integer arithmetic: a float would round 1Ei's neighbours and 999P differently.
    fraction = -(-int(frac) * factor // 10 ** len(frac)) if frac else 0  # ceiling division
    return int(whole) * factor + fraction


# --- runtime configuration: environment, labels, paths, DNS names, schedules ------------------------
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,253}[A-Za-z0-9])?$")
DNS_NAME_RE = re.compile(r"^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_CRON_FIELD_RE = re.compile(r"^(?:\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/[0-9]+)?(?:,(?:\*|[0-9A-Za-z]+"
                            r"(?:-[0-9A-Za-z]+)?)(?:/[0-9]+)?)*$")
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = ({}, {}, {}, {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
    {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))})
RESERVED_LABEL_PREFIXES = ("org.opsflow.", "com.docker.compose.")


def check_env_name(value: str) -> str:
    """An environment variable name every shell and runtime accepts: ``[A-Za-z_][A-Za-z0-9_]*``."""
    if not isinstance(value, str) or not ENV_NAME_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a valid environment variable name: use letters, digits and '_', "
                           "not starting with a digit (e.g. DATABASE_URL)")
    return value


def check_env_value(value: str) -> str:
    """An environment value: any text without NUL bytes."""
    if not isinstance(value, str) or "\0" in value:
        raise InvalidInput("an environment value must be text without NUL bytes")
    return value


def check_label_key(value: str) -> str:
    """A container label key (``traefik.http.routers.shop.rule``); opsflow's and compose's own are reserved."""
    if not isinstance(value, str) or not LABEL_KEY_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a valid label key: letters, digits, '.', '_', '/', '-' (max 255)")
    if value.startswith(RESERVED_LABEL_PREFIXES):
        raise InvalidInput(f"label {value!r} uses a reserved prefix ({', '.join(RESERVED_LABEL_PREFIXES)})")
    return value


def check_label_value(value: str) -> str:
    """A label value: one line of at most 4096 characters (Traefik rules with backticks are fine)."""
    if not isinstance(value, str) or len(value) > 4096 or _CONTROL_RE.search(value):
        raise InvalidInput("a label value must be one line of at most 4096 characters without control characters")
    return value


def _check_abs_path(value: str, what: str) -> str:
    if (not isinstance(value, str) or not value.startswith("/") or "\0" in value or ":" in value
            or _CONTROL_RE.search(value) or len(value) > 4096):
        raise InvalidInput(f"{value!r} is not a valid {what}: an absolute path without ':' or control characters")
    if any(part in ("..", ".") for part in value.split("/")) or "//" in value:
        raise InvalidInput(f"{value!r} is not a valid {what}: no '.', '..' or empty parts")
    return value.rstrip("/") or "/"


def check_host_path(value: str) -> str:
    """An absolute, normalized path on a host (a bind mount's source, an allowed root)."""
    return _check_abs_path(value, "host path")


def check_container_path(value: str) -> str:
    """An absolute, normalized path inside a container (a mount's target, a secret file)."""
    path = _check_abs_path(value, "container path")
    if path == "/":
        raise InvalidInput("a mount target cannot be the container's root '/'")
    return path


def path_under(path: str, roots: list[str]) -> bool:
    """True when normalized ``path`` is one of ``roots`` or inside one (``/srv/app`` is not under ``/sr``)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def check_dns_name(value: str) -> str:
    """A DNS name as an Ingress host takes it: lowercase RFC 1123 labels, optionally ``*.`` first; no IP."""
    if (not isinstance(value, str) or len(value) > 253 or not DNS_NAME_RE.fullmatch(value)
            or re.fullmatch(r"[0-9.]+", value)):
        raise InvalidInput(f"{value!r} is not a DNS name: lowercase letters, digits and '-' in dot-separated "
                           "labels (e.g. shop.example.com or *.example.com), not an IP address")
    return value


def check_cron(value: str) -> str:
    """A cron schedule of five fields (minute hour day-of-month month day-of-week) or a macro like ``@daily``."""
    if isinstance(value, str) and value.strip() in _CRON_MACROS:
        return value.strip()
    fields = value.split() if isinstance(value, str) else []
    bad = f"{value!r} is not a cron schedule: five fields 'minute hour day month weekday', e.g. '30 3 * * *'"
    if len(fields) != 5:
        raise InvalidInput(bad)
    for text, (low, high), names in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        if not _CRON_FIELD_RE.fullmatch(text):
            raise InvalidInput(bad)
        for number in re.findall(r"[0-9A-Za-z]+", re.sub(r"/[0-9]+", "", text)):
            got = names.get(number.lower()) if not number.isdigit() else int(number)
            if got is None or not low <= got <= high:
                raise InvalidInput(f"{bad}; {number!r} is out of range {low}-{high}")
    return " ".join(fields)


EnvName = Annotated[str, AfterValidator(check_env_name), Field(json_schema_extra={"pattern": ENV_NAME_RE.pattern})]
EnvValue = Annotated[str, AfterValidator(check_env_value)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
HostPath = Annotated[str, AfterValidator(check_host_path)]
ContainerPath = Annotated[str, AfterValidator(check_container_path)]
DnsName = Annotated[str, AfterValidator(check_dns_name), Field(json_schema_extra={"pattern": DNS_NAME_RE.pattern})]
CronSchedule = Annotated[str, AfterValidator(check_cron)]
# --- TLS and labels -------------------------------------------------------------------------------------

_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def check_pem_certificates(value: str | None) -> str | None:
    """One or more PEM certificates (a CA bundle), e.g. a private registry's CA; checked by loading them."""
    if value is None or not value.strip():
        return None
    import ssl

    if not _PEM_CERT_RE.search(value):
        raise InvalidInput("is not a PEM certificate: paste the CA's certificate, '-----BEGIN CERTIFICATE-----' "
                           "through '-----END CERTIFICATE-----'")
    try:
        # A bare context: loading the system's CA bundle too would cost 20-50 ms per block load.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=value)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(f"the PEM certificate does not load ({exc}); paste the CA certificate itself") from None
    return value.strip() + "\n"


PemCertificates = Annotated[str | None, AfterValidator(check_pem_certificates)]

LABEL_RE = re.compile(r"^[^\s,\x00-\x1f][^,\x00-\x1f]{0,48}[^\s,\x00-\x1f]$|^[^\s,\x00-\x1f]$")


def check_label(value: str) -> str:
    """A pull request label name as the forges allow it (1-50 characters, no commas or control characters)."""
    if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
        raise InvalidInput(f"{value!r} is not a label name: use 1-50 characters without commas, e.g. 'safe-to-test'")
    return value


Label = Annotated[str, AfterValidator(check_label), Field(json_schema_extra={"pattern": LABEL_RE.pattern})]
