"""The registry cleanup planner: pure, no I/O. Which tags expire under a policy, and what that
means for each manifest (delete, untag, or keep and why).

See ``blocks/cleanup_policy.py`` for the rule semantics. Safety, in this order:
always-keep patterns, then digests in use (running containers, pods, recorded deploys, and
for an image index any of its children), then digest sharing: a manifest is deleted only
when every tag on it expired.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from blocks.cleanup_policy import RegistryCleanupPolicy, matches_any

DELETE = "delete"
UNTAG = "untag"
KEEP = "keep"
SELECTED = (DELETE, UNTAG)


@dataclass(frozen=True)
class ImageRecord:
    """One tag of a repository and the manifest it points at."""

    repository: str
    tag: str
    digest: str
    created: datetime | None
    size: int
    media_type: str = "application/vnd.oci.image.manifest.v1+json"
    children: tuple[str, ...] = ()  # the manifests of an image index


@dataclass(frozen=True)
class PlanRow:
    repository: str
    tag: str
    digest: str
    created: datetime | None
    size: int
    rule: str
    action: str
    reason: str


@dataclass
class CleanupPlan:
    rows: list[PlanRow] = field(default_factory=list)

    @property
    def selected(self) -> list[PlanRow]:
        return [r for r in self.rows if r.action in SELECTED]

    def deletions(self) -> list[tuple[str, str]]:
        """(repository, digest) of every manifest to delete, once each, in a stable order."""
        return sorted({(r.repository, r.digest) for r in self.rows if r.action == DELETE})

    def untags(self) -> list[tuple[str, str]]:
        return sorted({(r.repository, r.tag) for r in self.rows if r.action == UNTAG})

    def reclaimable_bytes(self) -> int:
        """Bytes of the manifests deleted (layers shared with kept images are not freed)."""
        sizes = {(r.repository, r.digest): r.size for r in self.rows if r.action == DELETE}
        return sum(sizes.values())

    def summary(self) -> dict:
        return {"tags": len(self.rows), "delete_tags": sum(r.action == DELETE for r in self.rows),
                "delete_manifests": len(self.deletions()), "untag": len(self.untags()),
                "keep": sum(r.action == KEEP for r in self.rows), "reclaimable_bytes": self.reclaimable_bytes()}


def _protected_digests(images: list[ImageRecord], in_use: set[str]) -> set[str]:
    """In-use digests, widened so an image index and its children are one unit."""
    protected = set(in_use)
    for img in images:
        if img.children and (img.digest in protected or protected.intersection(img.children)):
            protected.add(img.digest)
            protected.update(img.children)
    return protected


def plan_cleanup(  # noqa: PLR0912 - the safety rules in the order they apply, one branch each
        images: list[ImageRecord], policy: RegistryCleanupPolicy, in_use: set[str],
        now: datetime | None = None) -> CleanupPlan:
    """Decide every tag of ``images``; returns one row per tag."""
    now = now or datetime.now(UTC)
    protected = _protected_digests(images, in_use)
    rules = policy.ordered_rules()
    # tag → (rule label, expired?, reason)
    verdict: dict[tuple[str, str], tuple[str, bool, str]] = {}
    buckets: dict[tuple[int, str], list[ImageRecord]] = defaultdict(list)
    for img in images:
        key = (img.repository, img.tag)
        if matches_any(img.tag, policy.always_keep):
            verdict[key] = ("always-keep", False, "matches an always-keep pattern")
            continue
        rule = next((r for r in rules if r.decides(img.repository, img.tag)), None)
        if rule is None:
            verdict[key] = ("-", False, "no rule matches")
            continue
        buckets[(rule.priority, img.repository)].append(img)
    by_priority = {r.priority: r for r in rules}
    oldest = datetime.min.replace(tzinfo=UTC)
    for (priority, _repo), members in buckets.items():
        rule = by_priority[priority]
        members.sort(key=lambda i: (i.created or oldest, i.tag), reverse=True)
        for rank, img in enumerate(members):
            key = (img.repository, img.tag)
            if rule.keep_newest is not None and rank < rule.keep_newest:
                verdict[key] = (rule.label, False, f"among the newest {rule.keep_newest}")
            elif rule.older_than_days is not None and (
                    img.created is None or now - img.created <= timedelta(days=rule.older_than_days)):
                age = "unknown age" if img.created is None else f"{(now - img.created).days} days old"
                verdict[key] = (rule.label, False, f"{age}, not older than {rule.older_than_days:g} days")
            else:
                why = [f"beyond the newest {rule.keep_newest}"] if rule.keep_newest is not None else []
                if rule.older_than_days is not None:
                    why.append(f"older than {rule.older_than_days:g} days")
                verdict[key] = (rule.label, True, ", ".join(why))
    for img in images:  # a running image is never touched, whatever a rule says
        label, expired, reason = verdict[(img.repository, img.tag)]
        if expired and img.digest in protected:
            verdict[(img.repository, img.tag)] = (label, False, "in use (running, deployed or part of an in-use index)")

    tags_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for img in images:
        tags_of[(img.repository, img.digest)].append(img.tag)
    rows = []
    for img in images:
        label, expired, reason = verdict[(img.repository, img.tag)]
        if not expired:
            rows.append(PlanRow(img.repository, img.tag, img.digest, img.created, img.size, label, KEEP, reason))
            continue
        siblings = [t for t in tags_of[(img.repository, img.digest)] if t != img.tag]
        kept = sorted(t for t in siblings if not verdict[(img.repository, t)][1])
        if not kept:
            shared = f"; also removes {', '.join(sorted(siblings))}" if siblings else ""
            rows.append(PlanRow(img.repository, img.tag, img.digest, img.created, img.size, label, DELETE,
                                reason + shared))
        elif policy.untag_shared:
            rows.append(PlanRow(img.repository, img.tag, img.digest, img.created, img.size, label, UNTAG,
                                f"{reason}; manifest kept for {', '.join(kept)}, so only the tag is removed"))
        else:
            rows.append(PlanRow(img.repository, img.tag, img.digest, img.created, img.size, label, KEEP,
                                f"{reason}, but the manifest is also tagged {', '.join(kept)} (untag_shared is off)"))
    rows.sort(key=lambda r: (r.repository, r.action, r.tag))
    return CleanupPlan(rows)
