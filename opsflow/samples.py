"""The sample applications shipped in ``samples/``: their git repositories and their blocks.

The demo, the tests and the benchmarks all run the GitOps pipeline on ``samples/shop``: a TypeScript
backend (a Node HTTP server) and a TypeScript frontend (static files served by busybox httpd).
``samples/notes-api`` is a Node backend with a runtime dependency and its own stock Dockerfile
(``FROM node:20-alpine``, two stages); ``samples/storefront`` a Next.js app with standalone output.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from blocks.application import Application, Component, EnvFile, HealthCheck
from opsflow.core.paths import PROJECT_ROOT

SHOP_SOURCE = PROJECT_ROOT / "samples" / "shop"
NOTES_SOURCE = PROJECT_ROOT / "samples" / "notes-api"
STOREFRONT_SOURCE = PROJECT_ROOT / "samples" / "storefront"
GIT_ENV = {"GIT_AUTHOR_NAME": "opsflow", "GIT_AUTHOR_EMAIL": "opsflow@localhost.invalid",
           "GIT_COMMITTER_NAME": "opsflow", "GIT_COMMITTER_EMAIL": "opsflow@localhost.invalid"}
_IGNORED = shutil.ignore_patterns("node_modules", "dist", ".test-build", "junit.xml", ".env", "reports", ".next")


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


class SampleRepo:
    """A working copy with a bare ``origin`` on disk; ``commit()`` pushes and returns the SHA."""

    def __init__(self, root: Path, source: Path | None = None, branch: str = "main"):
        self.work = root / "work"
        self.bare = root / "origin.git"
        if source is not None:
            shutil.copytree(source, self.work, ignore=_IGNORED)
        else:
            self.work.mkdir(parents=True)
        git("init", "--bare", "-q", "-b", branch, str(self.bare), cwd=root)
        git("init", "-q", "-b", branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.branch = branch

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def write(self, rel: str, text: str) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def read(self, rel: str) -> str:
        return (self.work / rel).read_text()

    def commit(self, message: str = "change", branch: str | None = None) -> str:
        branch = branch or self.branch
        git("checkout", "-q", "-B", branch, cwd=self.work)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def merge(self, branch: str, into: str | None = None, message: str | None = None) -> str:
        """Merge ``branch`` into ``into`` with a merge commit (as a forge's merge button does); push it."""
        into = into or self.branch
        git("checkout", "-q", into, cwd=self.work)
        git("merge", "-q", "--no-ff", "-m", message or f"Merge branch {branch}", branch, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{into}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def tree(self, sha: str, path: str) -> str:
        """The git tree id of ``path`` at ``sha``."""
        return git("rev-parse", f"{sha}:{path}", cwd=self.work)


def shop_components(names: tuple[str, ...] = ("backend", "frontend"), test_after_build: bool = False,
                    ) -> list[Component]:
    """The shop's components as the pipeline builds them. Their tests compile their own tree (``tsc -p
    tsconfig.test.json`` into ``.test-build/``), not the build's ``dist/``, so they run beside the build."""
    known = {
        "backend": Component(
            name="backend", path="backend", install="npm", build_commands=[["npm", "run", "build"]],
            build_output="dist",
            test_command=["npm", "test"], test_after_build=test_after_build, junit_report="junit.xml",
            dockerfile="Dockerfile", base_image="opsflow:node", ports=[8080], health_check=HealthCheck(path="/healthz"),
        ),
        "frontend": Component(
            name="frontend", path="frontend", install="npm", build_commands=[["npm", "run", "build"]],
            build_output="dist", test_command=["npm", "test"], test_after_build=test_after_build,
            junit_report="junit.xml", dockerfile="Dockerfile", base_image="opsflow:busybox", ports=[8081],
            health_check=HealthCheck(path="/healthz"),
        ),
    }
    return [known[n] for n in names]


def env_secret_name(app: str, component: str) -> str:
    return f"{app}-{component}-env"


def env_file_text(public_name: str = "shop", build_token: str | None = None) -> str:
    """An env file as the build server keeps it: a public value baked into the build and a secret."""
    return f"PUBLIC_API_NAME={public_name}\nBUILD_TOKEN={build_token or secrets.token_hex(16)}\n"


def save_shop_blocks(repository: str, name: str = "shop", forge_repo: str = "", env_text: str | None = None,
                     components: tuple[str, ...] = ("backend", "frontend"), test_after_build: bool = False,
                     ) -> Application:
    """Save the shop's Application block and one Secret block per component env file."""
    from prefect.blocks.system import Secret

    comps = shop_components(components, test_after_build)
    text = env_text or env_file_text()
    for comp in comps:
        Secret(value=text).save(env_secret_name(name, comp.name), overwrite=True)
    app = Application(
        name=name, repository=repository, forge_repo=forge_repo, components=comps,
        env_files=[EnvFile(secret_block=env_secret_name(name, c.name), path=f"{c.path}/.env") for c in comps],
    )
    app.save(name, overwrite=True)
    return app


def notes_component() -> Component:
    """``samples/notes-api`` as a component: npm install (cached), production dependencies in the artifact,
    two JUnit reports, its own Dockerfile's ``runtime`` stage."""
    return Component(
        name="api", path=".", install="npm", build_commands=[["npm", "run", "build"]], build_output="dist",
        runtime_dependencies="npm", test_command=["npm", "test"], junit_reports=["reports/*.xml"],
        target="runtime", build_args={"NODE_VERSION": "20"}, ports=[3000], health_check=HealthCheck(path="/healthz"),
    )


def storefront_component() -> Component:
    """``samples/storefront`` (Next.js, ``output: "standalone"``) as a component."""
    return Component(
        name="web", path=".", install="npm", build_commands=[["npm", "run", "build"]],
        packaging="nextjs-standalone", test_command=["npm", "test"], junit_reports=["junit.xml"],
        ports=[3000], health_check=HealthCheck(path="/api/health"),
    )


def save_app_block(repository: str, name: str, components: list[Component], forge_repo: str = "",
                   env_files: list[EnvFile] | None = None) -> Application:
    """Save an Application block for one of the samples."""
    app = Application(name=name, repository=repository, forge_repo=forge_repo, components=components,
                      env_files=env_files or [])
    app.save(name, overwrite=True)
    return app


# --- MLOps samples (issues 7, 19) ---------------------------------------------------------------
ML_SOURCE = PROJECT_ROOT / "samples" / "ml-iris"
#: A DVC project written the way they are in the wild: its own requirements.txt (dvclive), two stages,
#: dvclive's nested eval/metrics.json and eval/plots/ declared in dvc.yaml.
ML_DVCLIVE_SOURCE = PROJECT_ROOT / "samples" / "ml-dvclive"


def ml_sample_data(dest: Path, seed: int = 7, n_samples: int = 600) -> None:
    """Write ``train.csv`` and ``valid.csv`` (a generated two-class problem) into ``dest``."""
    import numpy as np
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_samples, n_features=8, n_informative=5, random_state=seed)
    dest.mkdir(parents=True, exist_ok=True)
    header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
    cut = int(n_samples * 0.7)
    for name, rows in (("train.csv", slice(0, cut)), ("valid.csv", slice(cut, None))):
        np.savetxt(dest / name, np.column_stack([x[rows], y[rows]]), delimiter=",", header=header, comments="",
                   fmt="%.6f")


def ml_sample_repo(root: Path, store, prefix: str, source: Path = ML_SOURCE, model_name: str | None = None
                   ) -> SampleRepo:
    """An ML sample (``source``: ``ML_SOURCE`` or ``ML_DVCLIVE_SOURCE``) as a git repository whose ``data/``
    is tracked by DVC and pushed to ``store``; ``model_name`` replaces the one its opsflow-ml.yaml registers.

    The remote in ``.dvc/config`` names only the bucket, prefix and endpoint; the credentials go
    to DVC in-process (``remote_config``) and are never written to the repository.
    """
    from dvc.repo import Repo

    repo = SampleRepo(root, source)
    if model_name:
        config = repo.read("opsflow-ml.yaml")
        repo.write("opsflow-ml.yaml", re.sub(r"(?m)^model_name: .*$", f"model_name: {model_name}", config))
    ml_sample_data(repo.work / "data")
    with Repo.init(str(repo.work)) as dvc:
        with dvc.config.edit() as conf:
            conf["core"]["remote"] = "storage"
            conf["remote"]["storage"] = {"url": f"s3://{store.bucket}/{prefix}", "endpointurl": store.endpoint_url,
                                         "region": store.region}
        dvc.add(str(repo.work / "data"))
    with Repo(str(repo.work), remote_config={
            "access_key_id": store.access_key_id.get_secret_value(),
            "secret_access_key": store.secret_access_key.get_secret_value()}) as dvc:
        dvc.push()
    repo.commit("ML sample: data tracked by DVC")
    return repo


def save_ml_blocks(repository: str, name: str = "ml-iris", forge_repo: str = "") -> Application:
    """An ML sample's Application block (``ml_project=True``: webhooks route it to the MLOps flows; no
    components: the repository's opsflow-ml.yaml declares its experiment)."""
    app = Application(name=name, repository=repository, forge_repo=forge_repo, ml_project=True)
    app.save(name, overwrite=True)
    return app
