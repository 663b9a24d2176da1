"""MLOps benchmark: the cost of the dvc_pull task and of Prefect around the PR pipeline.

    OPSFLOW_HOME=... OPSFLOW_PREFECT_PORT=... OPSFLOW_S3_PORT=... OPSFLOW_MLFLOW_PORT=... \\
        uv run python bench/mlops.py [--files 200] [--mb 1] [--rounds 2]

Uses the stack of ``opsflow stack up`` (started here if it is not running; ports from the OPSFLOW_*
variables like the CLI).

* ``dvc_pull_ratio``: the ``dvc_pull`` task (DVC's API: fetch + checkout into the workspace) on a
  fresh clone of a repository tracking ``--files`` files of ``--mb`` MB each, vs a plain boto3
  download of the same objects with 16 threads. Best round of each.
* ``overhead_ratio``: the ``mlops-pr`` flow on the ML sample vs a plain script making the same calls
  (clone, DVC pull, experiment, MLflow logging, champion look-up; the task functions' ``.fn``).

Prints one line per measurement and a final line ``RESULT {json}``.

``dvc_pull_ratio`` depends on the machine's load more than on DVC's options: on an idle 2-core
machine it is 0.7-1.0 (with the link checkout or the default copy: the checkout copy is ~0.3 s of
~1.6 s), and DVC's client spends about the CPU seconds boto3 does (1.2-1.6 s each). With other
processes competing for the cores (load average 9-12), it rose to 1.47-1.76, most likely because
DVC's transfers run on one asyncio thread (``jobs`` only raises its concurrency) and boto3's on 16
threads, which get a larger share of contended CPUs. Compare figures taken under the same load only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_dataset(root: Path, store, files: int, mb: int) -> tuple[Path, str]:
    """A DVC repository with ``files`` random files in ``data/``, pushed under a new prefix; returns it."""
    from dvc.repo import Repo

    from opsflow.samples import git

    work = root / "big"
    (work / "data").mkdir(parents=True)
    for i in range(files):
        (work / "data" / f"part-{i:04d}.bin").write_bytes(os.urandom(mb * 1024 * 1024))
    git("init", "-q", cwd=work)
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    with Repo.init(str(work)) as dvc:
        with dvc.config.edit() as conf:
            conf["core"]["remote"] = "storage"
            conf["remote"]["storage"] = {"url": f"s3://{store.bucket}/{prefix}", "endpointurl": store.endpoint_url}
        dvc.add(str(work / "data"))
    from tasks.mlops.data import _remote_config

    with Repo(str(work), remote_config=_remote_config(store)) as dvc:
        dvc.push(jobs=16)
    return work, prefix


def fresh_copy(work: Path, dest: Path) -> Path:
    shutil.copytree(work, dest, ignore=shutil.ignore_patterns("cache", "tmp", "data"))
    return dest


def plain_download(store, prefix: str, dest: Path) -> int:
    s3 = store.get_client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    dest.mkdir(parents=True)

    def get(key: str) -> None:
        s3.download_file(store.bucket, key, str(dest / key.replace("/", "_")))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(get, keys))
    return len(keys)


def plain_pr(app_name: str, sha: str) -> None:
    """The PR pipeline's work without Prefect: the same functions in the same order."""
    from prefect.logging import disable_run_logger

    from blocks import Application, MlflowServer, ObjectStore
    from tasks.git import clone_repo
    from tasks.mlops.champion import compare_to_champion
    from tasks.mlops.config import load_ml_config, run_tags
    from tasks.mlops.data import dvc_pull
    from tasks.mlops.experiment import run_experiment
    from tasks.mlops.tracking import find_champion, log_to_mlflow

    with disable_run_logger():
        app = Application.load(app_name)
        store, server = ObjectStore.load("opsflow-data"), MlflowServer.load("local-mlflow")
        checkout = clone_repo.fn(app.repository, sha)
        cfg = load_ml_config(checkout.path)
        pulled = dvc_pull.fn(checkout.path, store)
        cand = run_experiment.fn(checkout.path, cfg.command)
        tags = run_tags(checkout, None, 1, "b/ml", pulled.data_hashes)
        log_to_mlflow.fn(server, cfg.model_name, checkout.path, cand, tags)
        compare_to_champion(cand, find_champion.fn(server, cfg.model_name, cfg.champion_alias), cfg.metrics)
        shutil.rmtree(checkout.path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mb", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()  # the stack's API URL and auth string, before Prefect is imported
    from opsflow.stack import Stack, StackConfig

    cfg = StackConfig.from_env()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    from prefect.logging import disable_run_logger

    from blocks import ObjectStore
    from flows.mlops_pr import mlops_pr
    from opsflow.samples import ml_sample_repo, save_ml_blocks
    from tasks.mlops.data import dvc_pull

    store = ObjectStore.load("opsflow-data")
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-mlops-") as tmp:
        root = Path(tmp)
        work, prefix = make_dataset(root, store, args.files, args.mb)
        task_s, plain_s = [], []
        for i in range(args.rounds):
            copy = fresh_copy(work, root / f"copy-{i}")
            t = time.monotonic()
            with disable_run_logger():
                pulled = dvc_pull.fn(copy, store)
            task_s.append(time.monotonic() - t)
            t = time.monotonic()
            n = plain_download(store, prefix, root / f"plain-{i}")
            plain_s.append(time.monotonic() - t)
            print(f"round {i}: dvc_pull {task_s[-1]:.2f}s ({pulled.fetched} fetched), "
                  f"boto3 {plain_s[-1]:.2f}s ({n} objects)")
            shutil.rmtree(copy)
            shutil.rmtree(root / f"plain-{i}")
        result.update(dvc_pull_ratio=round(min(task_s) / min(plain_s), 3), dvc_pull_s=round(min(task_s), 2),
                      boto3_s=round(min(plain_s), 2), files=args.files, mb_total=args.files * args.mb)
        shutil.rmtree(work)

        repo = ml_sample_repo(root / "ml", store, f"bench/ml-{uuid.uuid4().hex[:6]}")
        app = f"bench-ml-{uuid.uuid4().hex[:6]}"
        repo.write("opsflow-ml.yaml", repo.read("opsflow-ml.yaml").replace("model_name: ml-iris", f"model_name: {app}"))
        sha = repo.commit("bench")
        save_ml_blocks(repo.url, name=app, forge_repo="bench/ml")
        plain_pr(app, sha)  # warm-up: imports, font cache, experiment
        flow_s, script_s = [], []
        for i in range(args.rounds):
            t = time.monotonic()
            mlops_pr(app=app, pr=1, sha=sha)
            flow_s.append(time.monotonic() - t)
            t = time.monotonic()
            plain_pr(app, sha)
            script_s.append(time.monotonic() - t)
            print(f"round {i}: mlops-pr flow {flow_s[-1]:.2f}s, plain script {script_s[-1]:.2f}s")
        result.update(overhead_ratio=round(min(flow_s) / min(script_s), 3), flow_s=round(min(flow_s), 2),
                      script_s=round(min(script_s), 2))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
