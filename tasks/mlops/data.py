"""DVC data of an ML repository: what its ``.dvc`` files track, and pulling it from the object store.

The object store's keys go to DVC in-process (``remote_config``), never in argv or ``.dvc/config``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from blocks import ObjectStore
from opsflow.core.errors import MlopsError, RemoteError
from opsflow.core.files import directory_bytes
from tasks.progress import StepProgress


@dataclass
class PullResult:
    fetched: int
    data_hashes: dict[str, str]


def tracked_files(workdir: Path) -> list[Path]:
    """The ``*.dvc`` files of the checkout (the data it tracks; stage outputs are made by the experiment)."""
    return sorted(p for p in workdir.rglob("*.dvc") if p.is_file() and ".dvc" not in p.relative_to(workdir).parts[:-1])


def tracked_outs(workdir: Path) -> list[dict]:
    """The outputs the ``*.dvc`` files declare (``path``, ``md5``, ``size``, ...)."""
    return [out for dvc_file in tracked_files(workdir)
            for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])]


def dvc_hashes(workdir: Path) -> dict[str, str]:
    """The md5 of every DVC-tracked output declared in ``*.dvc`` files."""
    return {out["path"]: out.get("md5", "") for out in tracked_outs(workdir)}


def tracked_bytes(workdir: Path) -> int:
    """The size of the data the ``*.dvc`` files declare (``size`` of each output, 0 where absent)."""
    return sum(int(out.get("size") or 0) for out in tracked_outs(workdir))


def directory_mb(root: Path) -> float:
    """MB of the files under ``root`` (0 when it does not exist yet)."""
    return directory_bytes(root) / 1e6


def remote_config(store: ObjectStore) -> dict[str, str]:
    """The object store's endpoint and keys as DVC's S3 remote options (for ``remote_config`` or config.local)."""
    return {"access_key_id": store.access_key_id.get_secret_value(),
            "secret_access_key": store.secret_access_key.get_secret_value(),
            "endpointurl": store.endpoint_url, "region": store.region}


# The checkout links the workspace to DVC's cache instead of copying every file a second time
# (the cache lives in the throw-away checkout, so a link is as good as a copy); reflink first, where
# the filesystem has it, keeps the files writable. Passed as a config override: the repo's .dvc/config
# is not changed. Read-only links make an experiment that writes into its inputs fail loudly.
CHECKOUT_CONFIG = {"cache": {"type": "reflink,hardlink,symlink,copy"}}


def remote_refuses(repo) -> bool:
    """Whether the DVC remote refuses the credentials DVC uses: a listing of its top (one request).

    DVC reports a refused download only as "N files failed to download", the same words as data
    that was never pushed; the listing tells them apart. Asked only once a pull failed (a refused
    pull downloads nothing): asked before every pull, it cost a second S3 client and a request
    (1-2 s on a loaded machine) on the way to pulls that succeed.
    """
    remote = repo.cloud.get_remote(command="pull")
    try:
        remote.fs.ls(remote.path, detail=False)
    except FileNotFoundError:
        return False  # nothing under the prefix: the pull itself says which data is missing
    except Exception as exc:  # noqa: BLE001 - S3 errors come in many types; only a refusal matters here
        return _refused(exc)
    return False


def _refused(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PermissionError) or any(
        s in text for s in ("403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"))


def _pull_error(exc: BaseException, store: ObjectStore, refused: bool) -> Exception:
    """What a failed pull raises: refused credentials, missing data, or DVC's own words."""
    text = str(exc)
    if refused:
        return MlopsError(f"DVC pull: the remote refused the credentials of object store {store.bucket!r} "
                          f"({type(exc).__name__}): they are wrong or may not read it; fix the block's "
                          f"access keys, then re-run")
    if any(s in text.lower() for s in ("missing", "checkout failed", "failed to pull", "failed to download")):
        said = " ".join(text.split())[:200]
        return MlopsError(f"DVC pull: the data this commit needs is not in the remote cache ({said}); "
                          f"run `dvc push` from the branch that produced it, then re-run")
    return RemoteError(f"DVC pull failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}")


@task(name="dvc-pull", task_run_name="dvc-pull", retries=1, retry_delay_seconds=2)
def dvc_pull(workdir: Path, store: ObjectStore, jobs: int = 16) -> PullResult:
    """Fetch and check out the repository's DVC data from the remote with ``store``'s credentials.

    Raises ``MlopsError`` saying what to do when the remote refuses the credentials or lacks the
    data, ``RemoteError`` for anything else DVC reports.
    """
    from dvc.repo import Repo

    logger = get_run_logger()
    total_mb = tracked_bytes(workdir) / 1e6
    refused = False
    try:
        with Repo(str(workdir), config=CHECKOUT_CONFIG, remote_config=remote_config(store)) as repo:
            cache = Path(repo.cache.local_cache_dir)
            # DVC's API has no progress callback: what has arrived is what is in its cache.
            progress = StepProgress("dvc pull", total=total_mb, unit="MB", measure=lambda: directory_mb(cache),
                                    logger=logger) if total_mb else contextlib.nullcontext()
            try:
                with progress:
                    result = repo.pull(targets=[str(p) for p in tracked_files(workdir)] or None, jobs=jobs)
            except Exception as exc:
                refused = _refused(exc) or remote_refuses(repo)
                raise
    except Exception as exc:  # noqa: BLE001 - DVC raises many types; name the situation instead
        raise _pull_error(exc, store, refused or _refused(exc)) from None
    stats = result.get("stats", result) if isinstance(result, dict) else {}
    hashes = dvc_hashes(workdir)
    logger.info("dvc pull: %s file(s) fetched; data %s", stats.get("fetched", 0), hashes)
    return PullResult(fetched=int(stats.get("fetched", 0)), data_hashes=hashes)


