"""The pure cleanup planner and the policy model: rule semantics, safety properties (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy, policy_from_dict
from opsflow.core.errors import InvalidInput
from tasks.registry.in_use import pod_image_digests
from tasks.registry.plan import DELETE, KEEP, UNTAG, ImageRecord, plan_cleanup

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def img(repo: str, tag: str, digest: int, days: float, children: tuple[str, ...] = (),
        subject: str | None = None) -> ImageRecord:
    media = OCI_INDEX if children else "application/vnd.oci.image.manifest.v1+json"
    return ImageRecord(repo, tag, d(digest), NOW - timedelta(days=days), 100 + digest, media, children, subject)


def sig(digest: int) -> str:
    """cosign's signature tag for ``d(digest)``."""
    return f"sha256-{d(digest)[7:]}.sig"


def policy(*rules: CleanupRule, always_keep=("latest", "stable", r"re:^v?\d+\.\d+\.\d+$"), untag_shared=True):
    return RegistryCleanupPolicy(rules=list(rules), always_keep=list(always_keep), untag_shared=untag_shared)


def actions(plan) -> dict[str, str]:
    return {f"{r.repository}:{r.tag}": r.action for r in plan.rows}


def test_keep_newest_and_age_work_together_and_first_matching_rule_decides():
    images = [img("app", f"pr-{i}", i, days=i * 10) for i in range(1, 6)]  # pr-1 newest (10 days)
    images += [img("app", "sha-a", 50, days=100), img("app", "v1.2.3", 51, days=400), img("app", "latest", 52, 500)]
    rules = (CleanupRule(priority=1, tags=["pr-*"], keep_newest=2, older_than_days=25),
             CleanupRule(priority=2, tags=["*"], keep_newest=0, older_than_days=1))
    got = actions(plan_cleanup(images, policy(*rules), in_use=set(), now=NOW))
    # pr-1, pr-2 newest two; pr-3 (30 d), pr-4, pr-5 older than 25 days → delete. Rule 2 never sees pr-*.
    assert got == {"app:pr-1": KEEP, "app:pr-2": KEEP, "app:pr-3": DELETE, "app:pr-4": DELETE, "app:pr-5": DELETE,
                   "app:sha-a": DELETE, "app:v1.2.3": KEEP, "app:latest": KEEP}
    # Swapping priorities: the catch-all rule now decides for the pr tags too.
    swapped = (CleanupRule(priority=1, tags=["*"], keep_newest=0, older_than_days=1),
               CleanupRule(priority=2, tags=["pr-*"], keep_newest=2, older_than_days=25))
    assert actions(plan_cleanup(images, policy(*swapped), set(), NOW))["app:pr-1"] == DELETE


def test_young_images_are_kept_even_beyond_keep_newest():
    images = [img("app", f"t{i}", i, days=i) for i in range(5)]
    plan = plan_cleanup(images, policy(CleanupRule(priority=1, keep_newest=1, older_than_days=3)), set(), NOW)
    assert actions(plan) == {"app:t0": KEEP, "app:t1": KEEP, "app:t2": KEEP, "app:t3": KEEP, "app:t4": DELETE}


def test_shared_digest_is_deleted_only_when_all_its_tags_expire_else_untagged_or_kept():
    images = [img("app", "old-a", 7, 90), img("app", "old-b", 7, 90), img("app", "keep-me", 8, 90),
              img("app", "old-c", 8, 90)]
    rule = CleanupRule(priority=1, tags=["old-*"], keep_newest=0, older_than_days=30)
    plan = plan_cleanup(images, policy(rule), set(), NOW)
    assert actions(plan) == {"app:old-a": DELETE, "app:old-b": DELETE, "app:keep-me": KEEP, "app:old-c": UNTAG}
    assert plan.deletions() == [("app", d(7))] and plan.untags() == [("app", "old-c")]
    strict = plan_cleanup(images, policy(rule, untag_shared=False), set(), NOW)
    assert actions(strict)["app:old-c"] == KEEP
    assert "also tagged keep-me" in next(r.reason for r in strict.rows if r.tag == "old-c")


def test_in_use_digests_and_index_units_are_never_selected():
    children = (d(31), d(32))
    images = [img("app", "old-running", 20, 400), img("app", "old-index", 30, 400, children),
              img("app", "old-free", 40, 400)]
    rule = CleanupRule(priority=1, keep_newest=0, older_than_days=1)
    plan = plan_cleanup(images, policy(rule), in_use={d(20), d(32)}, now=NOW)  # a pod runs the arm64 child
    assert actions(plan) == {"app:old-running": KEEP, "app:old-index": KEEP, "app:old-free": DELETE}
    assert "in use" in next(r.reason for r in plan.rows if r.tag == "old-index")


def test_a_kept_multi_arch_index_keeps_its_platform_manifests_and_their_tags():
    """issue 21 (a): v2.0.0 (always kept) is an index whose amd64 manifest is also tagged v2.0.0-amd64."""
    images = [img("app", "v2.0.0", 50, 30, children=(d(51), d(52))), img("app", "v2.0.0-amd64", 51, 30),
              img("app", "v2.0.0-arm64", 52, 30), img("app", "tmp-other", 52, 30)]
    plan = plan_cleanup(images, policy(CleanupRule(priority=1, keep_newest=0)), set(), NOW)
    assert actions(plan) == {"app:v2.0.0": KEEP, "app:v2.0.0-amd64": KEEP, "app:v2.0.0-arm64": KEEP,
                             "app:tmp-other": KEEP}
    assert plan.deletions() == [] and plan.untags() == []
    assert "platform manifest of the kept index" in next(r.reason for r in plan.rows if r.tag == "v2.0.0-amd64")


def test_a_deleted_index_takes_its_untagged_platform_manifests_along_but_not_kept_ones():
    images = [img("app", "old-multi", 60, 90, children=(d(61), d(62), d(63))), img("app", "keep-arm", 62, 1),
              img("app", "other", 70, 90, children=(d(63),)), img("app", "v1.0.0", 70, 90)]
    plan = plan_cleanup(images, policy(CleanupRule(priority=1, tags=["old-*", "other"], keep_newest=0)), set(), NOW)
    rows = {(r.tag, r.digest): r.action for r in plan.rows}
    assert rows[("old-multi", d(60))] == DELETE and rows[("", d(61))] == DELETE
    assert ("", d(62)) not in rows and ("", d(63)) not in rows  # tagged keep-arm / child of the kept "other" index
    assert plan.deletions() == [("app", d(60)), ("app", d(61))]  # the index before its child


def test_signatures_and_attestations_follow_their_subject():
    images = [img("app", "old", 10, 90), img("app", sig(10), 11, 90), img("app", f"sha256-{d(10)[7:]}.att", 12, 90),
              img("app", "new", 20, 1), img("app", sig(20), 21, 90),
              img("app", sig(30), 31, 1),  # its subject is gone
              ImageRecord("app", "", d(41), None, 0, subject=d(20)),  # an untagged referrer (the referrers API)
              ImageRecord("app", "", d(42), None, 0, subject=d(10))]
    rule = CleanupRule(priority=1, keep_newest=0, older_than_days=30)
    plan = plan_cleanup(images, policy(rule, always_keep=("new",)), set(), NOW)
    by_digest = {r.digest: r.action for r in plan.rows}
    assert by_digest == {d(10): DELETE, d(11): DELETE, d(12): DELETE, d(20): KEEP, d(21): KEEP, d(31): DELETE,
                         d(41): KEEP, d(42): DELETE}
    # a young signature of an old image is deleted with it; an old signature of a kept image stays
    assert "deleted with it" in next(r.reason for r in plan.rows if r.digest == d(11))
    assert "no longer in the registry" in next(r.reason for r in plan.rows if r.digest == d(31))
    # a signature whose subject exists untagged (found by the inventory) stays
    kept = plan_cleanup(images, policy(rule, always_keep=("new",)), set(), NOW, existing={("app", d(30))})
    assert {r.digest: r.action for r in kept.rows}[d(31)] == KEEP


@pytest.mark.parametrize("data, message", [
    ({"rules": [{"priority": 1, "keep_newest": -1}]}, "rules[1].keep_newest"),
    ({"rules": [{"priority": 1, "tags": ["re:(unclosed"], "keep_newest": 1}]},
     "rules[1].tags: invalid regular expression"),
    ({"rules": [{"priority": 5, "keep_newest": 1}, {"priority": 5, "older_than_days": 3}]},
     "rules 1 and 2 both have priority 5"),
    ({"rules": [{"priority": 1}, {"priority": 2, "keep_newest": 3}]}, "rules[1]: set keep_newest or older_than_days"),
    ({"rules": []}, "rules: List should have at least 1 item"),
    ({"rules": [{"priority": 1, "keep_newest": 1}], "always_keep": ["re:[z-a]"]}, "always_keep"),
])
def test_bad_policies_are_rejected_naming_the_rule(data, message):
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        policy_from_dict(data)


def test_pod_digests_come_from_image_ids_and_pinned_images():
    pods = [{"status": {"containerStatuses": [{"image": "r/app:1", "imageID": f"docker-pullable://r/app@{d(1)}"}],
                        "initContainerStatuses": [{"imageID": f"r/init@{d(2)}"}]},
             "spec": {"containers": [{"image": f"r/side@{d(3)}"}]}},
            {"status": {}, "spec": {"containers": [{"image": "r/app:latest"}]}}]
    assert pod_image_digests(pods) == {d(1), d(2), d(3)}


# --- properties ------------------------------------------------------------------------------

tag_names = st.sampled_from(["latest", "stable", "v1.0.0", "2.3.4", "pr-1", "pr-2", "pr-3", "main", "dev",
                             "abc1234", "feature-x", "nightly", "rc-1", "old", "v2.0.0-amd64", "x-arm64"])
RELEASE_TAGS = ("latest", "stable", "v1.0.0", "2.3.4")


@st.composite
def registries(draw):
    """Repositories of tags on shared digests; digests 5, 10 are indexes of children 100+n and 200+n, which may
    carry tags of their own (``v2.0.0-amd64``); some digests are signed (``sha256-<hex>.sig``, digest 300+n),
    some signatures point at digests that do not exist (orphans)."""
    images, created_of = [], {}
    for repo in draw(st.lists(st.sampled_from(["app", "web", "ml/model"]), min_size=1, max_size=3, unique=True)):
        used = set()
        for tag in draw(st.lists(tag_names, min_size=1, max_size=10, unique=True)):
            digest = draw(st.one_of(st.integers(1, 12), st.sampled_from([105, 205, 110, 210])))
            days = created_of.setdefault((repo, digest), draw(st.integers(0, 400)))  # one manifest, one creation time
            children = (d(100 + digest), d(200 + digest)) if digest in (5, 10) else ()
            images.append(img(repo, tag, digest, days, children))
            used.add(digest)
        for digest in draw(st.lists(st.sampled_from([*sorted(used), 99]), max_size=3, unique=True)):
            images.append(img(repo, sig(digest), 300 + digest, draw(st.integers(0, 400))))
    return images


rule_sets = st.lists(
    st.builds(lambda p, tags, keep, age: CleanupRule(priority=p, tags=tags, keep_newest=keep, older_than_days=age),
              st.integers(1, 50), st.lists(st.sampled_from(["*", "pr-*", "re:[0-9a-f]{7}", "main", "*-*", "v2*"]),
                                           min_size=1, max_size=2),
              st.one_of(st.none(), st.integers(0, 4)), st.integers(0, 200)),
    min_size=1, max_size=4, unique_by=lambda r: r.priority)


@settings(max_examples=300, deadline=None)
@given(images=registries(), rules=rule_sets, in_use_ids=st.sets(st.integers(1, 12), max_size=3),
       untag_shared=st.booleans())
def test_planner_safety_properties(images, rules, in_use_ids, untag_shared):  # noqa: PLR0912 - one property each
    pol = policy(*rules, untag_shared=untag_shared)
    in_use = {d(i) for i in in_use_ids} | {d(200 + i) for i in in_use_ids}
    plan = plan_cleanup(images, pol, in_use, NOW)
    tagged = [r for r in plan.rows if r.tag]
    assert len(tagged) == len(images)
    assert all(r.action == DELETE for r in plan.rows if not r.tag)  # untagged rows: deleted with an index/subject
    by_key = {(r.repository, r.tag): r for r in tagged}
    deleted = set(plan.deletions())
    protected = set(in_use)
    for i in images:
        if i.children and protected.intersection(i.children):
            protected.add(i.digest)
    for row in plan.selected:
        assert row.tag not in RELEASE_TAGS  # release/latest/stable: always kept
        assert row.digest not in protected
    for repo, digest in deleted:  # a deleted manifest has no kept tag
        assert all(by_key[(i.repository, i.tag)].action == DELETE for i in images
                   if (i.repository, i.digest) == (repo, digest))
    # an index that stays keeps every manifest it references, and every tag on them
    kept_indexes = {(r.repository, r.digest) for r in tagged if r.action != DELETE and r.digest in (d(5), d(10))}
    for repo, index in kept_indexes:
        kids = next(i.children for i in images if (i.repository, i.digest) == (repo, index))
        assert not deleted.intersection((repo, c) for c in kids)
        assert all(by_key[(i.repository, i.tag)].action == KEEP for i in images
                   if i.repository == repo and i.digest in kids and not i.attached_to)
    # the children of a deleted index are deleted unless something keeps them
    for repo, index in deleted:
        for child in next((i.children for i in images if (i.repository, i.digest) == (repo, index)), ()):
            child_rows = [r for r in plan.rows if (r.repository, r.digest) == (repo, child)]
            assert (repo, child) in deleted or any(r.action == KEEP for r in child_rows) or child in protected
    # signatures follow their subject
    present = {(i.repository, i.digest) for i in images} | {(i.repository, c) for i in images for c in i.children}
    for i in images:
        if not i.attached_to:
            continue
        action = by_key[(i.repository, i.tag)].action
        subject = (i.repository, i.attached_to)
        if subject in deleted or subject not in present:
            assert action == DELETE, (i.tag, subject)
        else:
            assert action == KEEP, (i.tag, subject)
    if not untag_shared:
        assert not plan.untags()
    # rule priority: a selected tag was decided by the lowest-priority rule that matches it (signatures: by subject)
    for row in plan.selected:
        if row.tag and not row.tag.startswith("sha256-"):
            first = min((r for r in rules if r.decides(row.repository, row.tag)), key=lambda r: r.priority)
            assert row.rule == first.label
    # planning again on what an apply leaves selects nothing
    after = [i for i in images if (i.repository, i.digest) not in deleted
             and (i.repository, i.tag) not in {(r.repository, r.tag) for r in plan.selected}]
    assert plan_cleanup(after, pol, in_use, NOW).selected == []
