"""The registry cleanup planner: pure, no I/O. Which tags expire under a policy, and what that
means for each manifest (delete, untag, or keep and why).

See ``blocks/cleanup_policy.py`` for the rule semantics. Safety, in this order:

1. always-keep patterns, then digests in use (running containers, pods, recorded deploys, and for an
   image index any of its children), then digest sharing: a manifest is deleted only when every tag on
   it expired;
2. an image index and the manifests it references are one unit: every child of a kept index is kept,
   tags on it included (deleting a child manifest, or the tag that is its only name, would leave the
   kept index answering 404 for that platform); the children of a deleted index are deleted with it
   (by digest, unless something else keeps them), so garbage collection never has to guess which
   untagged manifests are garbage (``--delete-untagged`` is never needed);
3. signatures and attestations (cosign's ``sha256-<hex>.sig``/``.att``/``.sbom`` tags, the OCI referrers
   tag ``sha256-<hex>``, any manifest with a ``subject``) are no rule's business: they are kept exactly as
   long as their subject and deleted with it (or when their subject is gone from the registry).

Over 200 lines: the three safety rules above are one pass each over the same tables.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from blocks.cleanup_policy import RegistryCleanupPolicy, matches_any

DELETE = "delete"
UNTAG = "untag"
KEEP = "keep"
SELECTED = (DELETE, UNTAG)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ATTACHMENT_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(?:sig|att|sbom))?$")


@dataclass(frozen=True)
class ImageRecord:
    """One tag of a repository and the manifest it points at (``tag`` empty: an untagged referrer)."""

    repository: str
    tag: str
    digest: str
    created: datetime | None
    size: int
    media_type: str = "application/vnd.oci.image.manifest.v1+json"
    children: tuple[str, ...] = ()  # the manifests of an image index
    subject: str | None = None  # the manifest this one signs or attests (its ``subject``)

    @property
    def attached_to(self) -> str | None:
        """The digest this record is a signature/attestation/referrer of, or None for an image."""
        if self.subject:
            return self.subject
        match = ATTACHMENT_TAG.match(self.tag)
        return f"sha256:{match.group(1)}" if match else None


@dataclass(frozen=True)
class PlanRow:
    repository: str
    tag: str  # empty: a manifest without tags deleted by digest (a platform manifest, a referrer)
    digest: str
    created: datetime | None
    size: int
    rule: str
    action: str
    reason: str
    media_type: str = ""


@dataclass
class CleanupPlan:
    rows: list[PlanRow] = field(default_factory=list)

    @property
    def selected(self) -> list[PlanRow]:
        return [r for r in self.rows if r.action in SELECTED]

    def deletions(self) -> list[tuple[str, str]]:
        """(repository, digest) of every manifest to delete, once each: indexes first (a deleted child never
        leaves an index behind that points at it), then the rest, each in a stable order."""
        indexes = {(r.repository, r.digest) for r in self.rows if r.action == DELETE and r.media_type in INDEX_TYPES}
        others = {(r.repository, r.digest) for r in self.rows if r.action == DELETE} - indexes
        return sorted(indexes) + sorted(others)

    def untags(self) -> list[tuple[str, str]]:
        return sorted({(r.repository, r.tag) for r in self.rows if r.action == UNTAG})

    def kept_tags(self) -> list[tuple[str, str, str]]:
        """(repository, tag, digest) of every tag the plan keeps: what must still resolve and pull after it."""
        return sorted({(r.repository, r.tag, r.digest) for r in self.rows if r.action == KEEP and r.tag})

    def reclaimable_bytes(self) -> int:
        """Bytes of the manifests deleted (layers shared with kept images are not freed)."""
        sizes = {(r.repository, r.digest): r.size for r in self.rows if r.action == DELETE}
        return sum(sizes.values())

    def summary(self) -> dict:
        tagged = [r for r in self.rows if r.tag]
        return {"tags": len(tagged), "delete_tags": sum(r.action == DELETE for r in tagged),
                "delete_manifests": len(self.deletions()), "untag": len(self.untags()),
                "keep": sum(r.action == KEEP for r in tagged), "reclaimable_bytes": self.reclaimable_bytes()}


def _protected_digests(images: list[ImageRecord], in_use: set[str]) -> set[str]:
    """In-use digests, widened so an image index and its children are one unit."""
    protected = set(in_use)
    for img in images:
        if img.children and (img.digest in protected or protected.intersection(img.children)):
            protected.add(img.digest)
            protected.update(img.children)
    return protected


Verdict = tuple[str, bool, str]  # (rule label, expired?, reason)


def _rule_verdicts(images: list[ImageRecord], policy: RegistryCleanupPolicy, now: datetime) -> dict[tuple[str, str],
                                                                                                      Verdict]:
    """Each tag on its own: always-keep, else the first matching rule's newest-N and age limits."""
    rules = policy.ordered_rules()
    verdict: dict[tuple[str, str], Verdict] = {}
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
    return verdict


def _short(digest: str) -> str:
    return digest[:19]


def plan_cleanup(  # noqa: PLR0912, PLR0915 - the safety rules in the order they apply, one pass each
        images: list[ImageRecord], policy: RegistryCleanupPolicy, in_use: set[str],
        now: datetime | None = None, existing: set[tuple[str, str]] | None = None) -> CleanupPlan:
    """Decide every record of ``images``; returns one row per record, plus one per untagged manifest deleted
    with its index. ``existing``: (repository, digest) of untagged manifests known to exist (subjects of
    signatures that are not tagged themselves)."""
    now = now or datetime.now(UTC)
    images = list({(i.repository, i.tag, i.digest): i for i in images}.values())
    regular = [i for i in images if i.tag and i.attached_to is None]
    attached = [i for i in images if i.attached_to is not None]
    verdict = _rule_verdicts(regular, policy, now)
    protected = _protected_digests(images, in_use)
    for img in regular:  # a running image is never touched, whatever a rule says
        label, expired, _reason = verdict[(img.repository, img.tag)]
        if expired and img.digest in protected:
            verdict[(img.repository, img.tag)] = (label, False, "in use (running, deployed or part of an in-use index)")

    children: dict[tuple[str, str], tuple[str, ...]] = {}
    media: dict[tuple[str, str], str] = {}
    for img in images:
        media[(img.repository, img.digest)] = img.media_type
        if img.children:
            children[(img.repository, img.digest)] = img.children
    known = set(media) | {(repo, c) for (repo, _), kids in children.items() for c in kids} | set(existing or ())

    # Kept manifests: a tag that stays, or in use; then every manifest a kept index references (the unit).
    kept = {(i.repository, i.digest) for i in regular if not verdict[(i.repository, i.tag)][1]}
    kept |= {key for key in known if key[1] in protected}
    pinned: dict[tuple[str, str], str] = {}  # child → the kept index that keeps it

    def pin_children(start: set[tuple[str, str]]) -> None:
        todo = list(start)
        while todo:
            repo, digest = todo.pop()
            for child in children.get((repo, digest), ()):
                pinned.setdefault((repo, child), digest)
                if (repo, child) not in kept:
                    kept.add((repo, child))
                    todo.append((repo, child))

    pin_children(set(kept))

    tags_of: dict[tuple[str, str], list[str]] = defaultdict(list)
    for img in regular:
        tags_of[(img.repository, img.digest)].append(img.tag)
    rows: list[PlanRow] = []
    deleted: set[tuple[str, str]] = set()

    def row(img: ImageRecord, rule: str, action: str, reason: str) -> None:
        rows.append(PlanRow(img.repository, img.tag, img.digest, img.created, img.size, rule, action, reason,
                            img.media_type))
        if action == DELETE:
            deleted.add((img.repository, img.digest))

    for img in regular:
        key = (img.repository, img.digest)
        label, expired, reason = verdict[(img.repository, img.tag)]
        siblings = [t for t in tags_of[key] if t != img.tag]
        kept_siblings = sorted(t for t in siblings if not verdict[(img.repository, t)][1])
        if not expired:
            row(img, label, KEEP, reason)
        elif key in pinned:
            row(img, label, KEEP, f"{reason}, but it is a platform manifest of the kept index "
                                  f"{_short(pinned[key])}: its tags stay while the index is kept")
        elif not kept_siblings:
            shared = f"; also removes {', '.join(sorted(siblings))}" if siblings else ""
            row(img, label, DELETE, reason + shared)
        elif policy.untag_shared:
            row(img, label, UNTAG,
                f"{reason}; manifest kept for {', '.join(kept_siblings)}, so only the tag is removed")
        else:
            row(img, label, KEEP, f"{reason}, but the manifest is also tagged {', '.join(kept_siblings)} "
                                  "(untag_shared is off)")

    def delete_children(indexes: set[tuple[str, str]]) -> None:
        """Untagged manifests of deleted indexes go with them, unless something keeps them."""
        todo = list(indexes)
        while todo:
            repo, digest = todo.pop()
            for child in children.get((repo, digest), ()):
                if (repo, child) in kept or (repo, child) in deleted:
                    continue
                rows.append(PlanRow(repo, "", child, None, 0, "index unit", DELETE,
                                    f"platform manifest of the deleted index {_short(digest)}",
                                    media.get((repo, child), "")))
                deleted.add((repo, child))
                todo.append((repo, child))

    delete_children(set(deleted))

    # Signatures, attestations and referrers follow their subject (their own subjects first, in rounds).
    undecided = list(attached)
    attached_digests = {(i.repository, i.digest) for i in attached}
    while undecided:
        progress, waiting = False, []
        for img in undecided:
            subject = (img.repository, img.attached_to or "")
            what = f"{'referrer' if img.subject else 'signature/attestation'} of {_short(subject[1])}"
            if subject in deleted:
                if (img.repository, img.digest) in kept:
                    row(img, "subject", KEEP, f"{what}, which is deleted, but this manifest is kept for another tag")
                else:
                    row(img, "subject", DELETE, f"{what}, deleted with it")
                    delete_children({(img.repository, img.digest)})
            elif subject in kept or (subject in known and subject not in attached_digests):
                row(img, "subject", KEEP, f"{what}, kept as long as it is")
                if (img.repository, img.digest) not in kept:
                    kept.add((img.repository, img.digest))
                    pin_children({(img.repository, img.digest)})
            elif subject not in known:
                if (img.repository, img.digest) in kept:
                    row(img, "subject", KEEP, f"{what}, which is gone, but this manifest is kept for another tag")
                else:
                    row(img, "subject", DELETE, f"{what}, which is no longer in the registry")
                    delete_children({(img.repository, img.digest)})
            else:
                waiting.append(img)
                continue
            progress = True
        if not progress:  # signatures of each other only: nothing decides them, so they stay
            for img in waiting:
                row(img, "subject", KEEP, "signature of a signature that is kept")
            break
        undecided = waiting

    rows.sort(key=lambda r: (r.repository, r.action, r.tag, r.digest))
    return CleanupPlan(rows)
