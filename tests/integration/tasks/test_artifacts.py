"""Artifacts in the real object store: content-addressed keys, atomic commit, verified load."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from blocks import Application, ObjectStore
from opsflow.core.errors import ArtifactCorrupt, ArtifactNotFound
from tasks.artifacts.store import (
    artifact_key,
    load_artifact,
    pack,
    read_plan,
    record_test_results,
    save_artifact,
)
from tasks.build import BuildResult
from tasks.git import clone_repo
from tests.support.gitrepos import SourceRepo

pytestmark = [pytest.mark.stack]


@pytest.fixture
def app_and_checkout(tmp_path):
    src = SourceRepo(tmp_path / "src")
    src.write("web/index.ts", "export const x = 1;\n")
    src.write("web/Dockerfile", "FROM scratch\nCOPY . /www\n")
    src.write("README.md", "top\n")
    sha = src.commit()
    name = f"t{uuid.uuid4().hex[:10]}"
    app = Application(name=name, repository=src.url, components=[{"name": "web", "path": "web"}])
    checkout = clone_repo.fn(src.url, sha, workdir=tmp_path / "co")
    out = checkout.path / "web" / "dist"
    (out / "assets").mkdir(parents=True)
    (out / "index.js").write_text("console.log(1)\n")
    (out / "assets" / "app.css").write_text("body{}\n")
    build = BuildResult(component="web", output_dir=out, component_dir=checkout.path / "web", duration_s=0.1)
    return src, app, checkout, build


def test_key_depends_on_the_component_tree_and_recipe_only(app_and_checkout):
    src, app, checkout, _ = app_and_checkout
    comp = app.components[0]
    tree = checkout.tree_id("web")
    assert artifact_key(app.name, comp, tree) == artifact_key(app.name, comp, tree)
    other_recipe = comp.model_copy(update={"build_commands": [["make"]]})
    assert artifact_key(app.name, other_recipe, tree) != artifact_key(app.name, comp, tree)
    # A change outside the component leaves its tree, and so its key, unchanged.
    src.write("README.md", "changed\n")
    sha2 = src.commit("docs")
    checkout2 = clone_repo.fn(src.url, sha2, workdir=checkout.path.parent / "co2")
    assert checkout2.tree_id("web") == tree


def test_pack_is_reproducible(app_and_checkout, tmp_path):
    _, _, checkout, build = app_and_checkout
    dockerfile = checkout.path / "web" / "Dockerfile"
    first = pack(build.output_dir, dockerfile, tmp_path / "a.tar.gz")
    (build.output_dir / "index.js").touch()  # a new mtime must not change the archive
    second = pack(build.output_dir, dockerfile, tmp_path / "b.tar.gz")
    assert first == second


def test_save_then_load_round_trips_and_second_save_skips_upload(stack, app_and_checkout, tmp_path):
    _, app, checkout, build = app_and_checkout
    store = ObjectStore.load("opsflow-artifacts")
    comp = app.components[0]
    plan = read_plan(store, checkout, app.name, comp)
    assert not plan.exists and plan.key.startswith(f"{app.name}/web/")

    ref = save_artifact.fn(store, plan, build, comp, checkout)
    assert ref.uploaded and ref.digest.startswith("sha256:")
    s3 = store.get_client()
    meta = json.loads(s3.get_object(Bucket=store.bucket, Key=f"{plan.key}.json")["Body"].read())
    assert meta["commit"] == checkout.sha and meta["app"] == app.name and meta["component"] == "web"
    assert meta["digest"] == ref.digest and meta["size"] == ref.size
    body = s3.get_object(Bucket=store.bucket, Key=f"{plan.key}.tar.gz")["Body"].read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == ref.digest
    assert not s3.list_objects_v2(Bucket=store.bucket, Prefix="tmp/").get("Contents"), "temporary upload left"

    again = save_artifact.fn(store, read_plan(store, checkout, app.name, comp), build, comp, checkout)
    assert not again.uploaded and again.digest == ref.digest

    loaded = load_artifact.fn(store, plan.key, tmp_path / "ctx")
    assert (loaded.path / "Dockerfile").read_text() == "FROM scratch\nCOPY . /www\n"
    assert (loaded.path / "assets" / "app.css").read_text() == "body{}\n"
    assert loaded.metadata["tree"] == plan.tree

    record_test_results.fn(store, plan.key, {"passed": 3, "failed": 0})
    assert read_plan(store, checkout, app.name, comp).metadata["tests"] == {"passed": 3, "failed": 0}


def test_load_of_a_missing_key_names_it(stack):
    store = ObjectStore.load("opsflow-artifacts")
    with pytest.raises(ArtifactNotFound, match="no artifact is stored under nothing/here/abc"):
        load_artifact.fn(store, "nothing/here/abc")


def test_a_tampered_archive_is_refused(stack, app_and_checkout, tmp_path):
    _, app, checkout, build = app_and_checkout
    store = ObjectStore.load("opsflow-artifacts")
    comp = app.components[0]
    plan = read_plan(store, checkout, app.name, comp)
    save_artifact.fn(store, plan, build, comp, checkout)
    store.get_client().put_object(Bucket=store.bucket, Key=f"{plan.key}.tar.gz", Body=b"not the archive")
    with pytest.raises(ArtifactCorrupt, match="is corrupt"):
        load_artifact.fn(store, plan.key, tmp_path / "ctx")
    assert not (tmp_path / "ctx" / "Dockerfile").exists()


def test_an_unreachable_store_fails_naming_the_endpoint(app_and_checkout):
    _, app, checkout, _ = app_and_checkout
    dead = ObjectStore(endpoint_url="http://127.0.0.1:9", bucket="opsflow-artifacts", access_key_id="abcd",
                       secret_access_key="efghijkl", connect_timeout=0.5, max_attempts=2)
    with pytest.raises(Exception, match=r"127\.0\.0\.1:9"):
        read_plan(dead, checkout, app.name, app.components[0])
