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

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def img(repo: str, tag: str, digest: int, days: float, children: tuple[str, ...] = ()) -> ImageRecord:
    return ImageRecord(repo, tag, d(digest), NOW - timedelta(days=days), 100 + digest, children=children)


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
                             "abc1234", "feature-x", "nightly", "rc-1", "old"])


@st.composite
def registries(draw):
    images, digest_of_tag = [], {}
    for repo in draw(st.lists(st.sampled_from(["app", "web", "ml/model"]), min_size=1, max_size=3, unique=True)):
        for tag in draw(st.lists(tag_names, min_size=1, max_size=10, unique=True)):
            digest = draw(st.integers(1, 12))  # small range: many shared digests
            days = draw(st.integers(0, 400))
            children = (d(100 + digest), d(200 + digest)) if digest % 5 == 0 else ()
            key = (repo, digest)
            days = digest_of_tag.setdefault(key, days)  # one manifest has one creation time
            images.append(img(repo, tag, digest, days, children))
    return images


rule_sets = st.lists(
    st.builds(lambda p, tags, keep, age: CleanupRule(priority=p, tags=tags, keep_newest=keep, older_than_days=age),
              st.integers(1, 50), st.lists(st.sampled_from(["*", "pr-*", "re:[0-9a-f]{7}", "main", "*-*"]),
                                           min_size=1, max_size=2),
              st.one_of(st.none(), st.integers(0, 4)), st.integers(0, 200)),
    min_size=1, max_size=4, unique_by=lambda r: r.priority)


@settings(max_examples=300, deadline=None)
@given(images=registries(), rules=rule_sets, in_use_ids=st.sets(st.integers(1, 12), max_size=3),
       untag_shared=st.booleans())
def test_planner_safety_properties(images, rules, in_use_ids, untag_shared):
    pol = policy(*rules, untag_shared=untag_shared)
    in_use = {d(i) for i in in_use_ids} | {d(200 + i) for i in in_use_ids}
    plan = plan_cleanup(images, pol, in_use, NOW)
    assert len(plan.rows) == len(images)
    by_key = {(r.repository, r.tag): r for r in plan.rows}
    protected = set(in_use)
    for i in images:
        if i.children and protected.intersection(i.children):
            protected.add(i.digest)
    for row in plan.selected:
        assert not any(p.startswith("re:") is False and row.tag == p for p in pol.always_keep)
        assert row.tag not in ("latest", "stable", "v1.0.0", "2.3.4")  # release/latest/stable: always kept
        assert row.digest not in protected
    for repo, digest in plan.deletions():
        # a deleted manifest has no kept tag
        assert all(by_key[(i.repository, i.tag)].action == DELETE for i in images
                   if (i.repository, i.digest) == (repo, digest))
    if not untag_shared:
        assert not plan.untags()
    # rule priority: a selected tag was decided by the lowest-priority rule that matches it
    for row in plan.selected:
        first = min((r for r in rules if r.decides(row.repository, row.tag)), key=lambda r: r.priority)
        assert row.rule == first.label
    # planning again on what an apply leaves selects nothing
    gone = {(r.repository, r.tag) for r in plan.selected}
    after = [i for i in images if (i.repository, i.tag) not in gone]
    assert plan_cleanup(after, pol, in_use, NOW).selected == []
