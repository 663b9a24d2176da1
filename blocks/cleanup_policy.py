"""Registry lifecycle rules: which images a scheduled cleanup may delete, and which it always keeps.

Semantics (as ECR lifecycle policies and GitLab cleanup policies, with Harbor's always-keep list):

* Every tag is judged on its own first. Tags matching an ``always_keep`` pattern are kept.
  The other tags are given to the rules in ascending ``priority``; the **first rule whose
  repository and tag filters match a tag decides** for that tag, and later rules never see it.
  A tag no rule matches is kept.
* A rule orders the tags it decides for in one repository newest first (image creation time)
  and keeps the newest ``keep_newest``; of the others it expires those older than
  ``older_than_days`` (all of them when ``older_than_days`` is not set).
* A manifest is deleted only when every tag on it expired. Expired tags of a manifest that
  keeps another tag are untagged (``untag_shared``) or kept, and the plan says why. Digests
  in use (running containers, pods, recorded deploys) are never touched.
* An image index and the manifests it references are one unit (no tag of a platform manifest goes while
  its index stays); signatures and attestations (``sha256-<digest>.sig``/``.att``, OCI referrers) are
  kept as long as their subject and deleted with it (``tasks/registry/plan.py``).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated

from prefect.blocks.core import Block
from pydantic import AfterValidator, BaseModel, Field, model_validator

from blocks.schema import CachedJsonSchema
from opsflow.core.errors import InvalidInput

DEFAULT_ALWAYS_KEEP = [r"re:^v?\d+\.\d+\.\d+$", "latest", "stable"]


def compile_pattern(pattern: str) -> re.Pattern:
    """``re:<regex>`` is a regular expression matched against the whole name; anything else is
    a shell glob (``*``, ``?``, ``[...]``)."""
    if pattern.startswith("re:"):
        try:
            return re.compile(rf"(?:{pattern[3:]})\Z")
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern[3:]!r}: {exc}") from None
    if not pattern:
        raise ValueError("an empty pattern matches nothing; use '*' for everything")
    return re.compile(fnmatch.translate(pattern))


def check_patterns(patterns: list[str]) -> list[str]:
    """Every pattern compiles (a bad one raises naming it)."""
    for pattern in patterns:
        compile_pattern(pattern)
    return patterns


Patterns = Annotated[list[str], AfterValidator(check_patterns)]


def matches_any(name: str, patterns: list[str]) -> bool:
    return any(compile_pattern(p).match(name) for p in patterns)


def is_pattern(name: str) -> bool:
    """Whether ``name`` is a glob or ``re:`` pattern rather than one exact repository name."""
    return name.startswith("re:") or any(ch in name for ch in "*?[")


_REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


def check_repository_names(names: list[str]) -> list[str]:
    """Exact repository names as the v2 API spells them (``team/app``), no host."""
    bad = [n for n in names if not _REPOSITORY_RE.fullmatch(n)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a repository name: use the path without the registry host, "
                         "e.g. 'team/app' (lowercase; no globs here)")
    return names


class CleanupRule(BaseModel):
    """One lifecycle rule: which tags it decides for, and how many/how old of them to keep."""

    priority: int = Field(ge=1, le=10_000, description="Order of evaluation; the lowest matching rule decides.")
    description: str = Field(default="", max_length=200, description="What the rule is for, shown in the plan.")
    repositories: Patterns = Field(
        default_factory=lambda: ["*"], min_length=1,
        description="Repository globs (or 're:<regex>'), e.g. 'shop/*'.",
    )
    tags: Patterns = Field(
        default_factory=lambda: ["*"], min_length=1,
        description="Tags the rule decides for: globs or 're:<regex>', e.g. 'pr-*' or 're:^[0-9a-f]{40}$'.",
    )
    exclude_tags: Patterns = Field(default_factory=list, description="Tags the rule leaves to later rules.")
    keep_newest: int | None = Field(default=None, ge=0, le=100_000, description="Newest tags kept per repository.")
    older_than_days: float | None = Field(
        default=None, ge=0, le=36_500, description="Only tags older than this many days expire.")

    @model_validator(mode="after")
    def _bounded(self) -> CleanupRule:
        if self.keep_newest is None and self.older_than_days is None:
            raise ValueError("set keep_newest or older_than_days (a rule without either would expire every tag)")
        return self

    @property
    def label(self) -> str:
        return f"#{self.priority}" + (f" {self.description}" if self.description else "")

    def decides(self, repository: str, tag: str) -> bool:
        return (matches_any(repository, self.repositories) and matches_any(tag, self.tags)
                and not matches_any(tag, self.exclude_tags))


class RegistryCleanupPolicy(CachedJsonSchema, Block):
    """Lifecycle rules for a registry's repositories, evaluated by the registry cleanup flow."""

    _block_type_name = "opsflow registry cleanup policy"
    _block_type_slug = "opsflow-registry-cleanup-policy"
    _description = "Registry lifecycle rules: keep the newest N, expire after D days, tags always kept."

    rules: list[CleanupRule] = Field(min_length=1, description="Rules; the lowest priority that matches a tag decides.")
    always_keep: Patterns = Field(
        default_factory=lambda: list(DEFAULT_ALWAYS_KEEP),
        description="Tags never deleted (globs or 're:<regex>'): release versions, latest, stable by default.",
    )
    repositories: Annotated[list[str], AfterValidator(check_repository_names)] = Field(
        default_factory=list,
        description="Repositories by exact name (e.g. 'team/app'). Where the registry refuses to list its catalog "
        "to the cleanup's user (Harbor robot accounts, GitLab), these are what the cleanup looks at.",
    )
    untag_shared: bool = Field(
        default=True,
        description="An expired tag whose manifest keeps another tag is removed by re-pointing it at a tiny "
        "placeholder manifest that is then deleted (as regclient does); when off, such tags are kept.",
    )

    @model_validator(mode="after")
    def _unique_priorities(self) -> RegistryCleanupPolicy:
        seen: dict[int, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.priority in seen:
                raise ValueError(f"rules {seen[rule.priority] + 1} and {index + 1} both have priority "
                                 f"{rule.priority}; priorities must be unique")
            seen[rule.priority] = index
        return self

    def ordered_rules(self) -> list[CleanupRule]:
        return sorted(self.rules, key=lambda r: r.priority)


def policy_from_dict(data: dict, source: str = "policy") -> RegistryCleanupPolicy:
    """Validate a policy given as plain data; errors name the rule (``rules[2]``) and the field."""
    from pydantic import ValidationError

    try:
        return RegistryCleanupPolicy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(f"rules[{p + 1}]" if isinstance(p, int) and i == 1 and err["loc"][0] == "rules" else str(p)
                             for i, p in enumerate(err["loc"]))
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise InvalidInput(f"invalid cleanup policy ({source}): " + "; ".join(problems)) from None
