"""Which tags a merge pushes, moves or refuses (pure)."""

from __future__ import annotations

from flows.gitops_merge import plan_tags

SHA = "a" * 40
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_a_version_tag_on_an_already_pushed_commit_is_added_without_a_build():
    plan = plan_tags({SHA: D1, "main": D1, "1.4.2": None}, SHA, "1.4.2")
    assert (plan.digest, plan.add, plan.conflicts) == (D1, ["1.4.2"], [])


def test_a_partial_push_is_completed_and_the_branch_tag_moves_to_the_commit():
    plan = plan_tags({SHA: D1, "main": D2}, SHA, None)
    assert plan.add == ["main"]


def test_a_new_commit_pushes_every_tag():
    plan = plan_tags({SHA: None, "main": D2, "1.5.0": None}, SHA, "1.5.0")
    assert (plan.digest, plan.add, plan.conflicts) == (None, [SHA, "main", "1.5.0"], [])


def test_a_version_tag_naming_another_image_is_refused():
    assert plan_tags({SHA: None, "main": None, "1.4.2": D2}, SHA, "1.4.2").conflicts == ["1.4.2"]
    assert plan_tags({SHA: D1, "main": D1, "1.4.2": D2}, SHA, "1.4.2").conflicts == ["1.4.2"]
    assert plan_tags({SHA: D1, "main": D1, "1.4.2": D1}, SHA, "1.4.2").add == []
