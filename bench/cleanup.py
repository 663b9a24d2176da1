"""Registry cleanup benchmark: 2,000 tags in 20 repositories on the stack's registry.

    uv run python bench/cleanup.py [--repos 20] [--tags 100] [--concurrency 8]

Uses the stack of ``opsflow stack up`` (started if needed; ports from the OPSFLOW_* variables), found
in a fresh shell by itself: its API URL and auth string come from its home (``$OPSFLOW_HOME`` or
``.opsflow``) before Prefect is imported, so no temporary Prefect server is ever started. The registry
is the stack's (TLS with its CA, htpasswd login): the ``local-registry`` block.
Pushes two identical sets of repositories through the v2 API (tags of many ages, some release
tags, some digests marked in use, some digests shared by two tags), then:

* ``plan_s``: inventory of one set (every tag's manifest and config) plus the plan;
* ``apply_s``: the plan applied with ``--concurrency`` API calls at a time;
* ``sequential_apply_s``: the same plan on the second set, one call at a time;
* ``protected_deleted``: release tags and in-use digests missing afterwards (must be 0).

Prints one line per measurement and a final line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=100, help="tags per repository")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from opsflow.core.prefect_api import use_local_stack

    use_local_stack()  # the stack's API URL and auth string, before Prefect is imported

    import httpx

    from blocks import ContainerRegistry, names
    from blocks.cleanup_policy import CleanupRule, RegistryCleanupPolicy
    from opsflow.stack import Stack, StackConfig
    from tasks.registry.apply import apply_registry_cleanup
    from tasks.registry.inventory import inventory_registry
    from tasks.registry.plan import plan_cleanup
    from tests.support.registry_images import manifest_exists, push_image, put_blob

    cfg = StackConfig.running()
    Stack(cfg, say=lambda line: print(f"[stack] {line}", file=sys.stderr)).up()
    registry = ContainerRegistry.load(names.REGISTRY)
    policy = RegistryCleanupPolicy(rules=[CleanupRule(priority=1, tags=["build-*"], keep_newest=10,
                                                      older_than_days=7)])
    run = uuid.uuid4().hex[:6]
    http = registry.get_client()
    http.timeout = httpx.Timeout(60)

    def populate(prefix: str) -> tuple[dict[str, str], set[str]]:
        """Push the set; return {repo:tag → digest} of protected tags and the in-use digests."""
        protected: dict[str, str] = {}
        in_use: set[str] = set()
        work = []
        for r in range(args.repos):
            repo = f"bench-{run}-{prefix}/app{r:02d}"
            layer = os.urandom(4096)
            put_blob(http, repo, layer)  # once, before the parallel pushes that share it
            for t in range(args.tags):
                if t % 25 == 0:
                    work.append((repo, [f"v1.{r}.{t}"], 300 + t, layer, "release"))
                elif t % 20 == 0:
                    work.append((repo, [f"build-{t}", f"build-{t}-alias"], 50 + t, layer, None))
                else:
                    work.append((repo, [f"build-{t}"], t * 0.5, layer, "in-use" if t % 17 == 0 else None))

        def push(item):
            repo, tags, days, layer, _mark = item
            return item, push_image(http, repo, tags, days, layer=layer)

        with ThreadPoolExecutor(16) as pool:
            for (repo, tags, _days, _layer, mark), digest in pool.map(push, work):
                if mark == "release":
                    protected[f"{repo}:{tags[0]}"] = digest
                elif mark == "in-use":
                    protected[f"{repo}:{tags[0]}"] = digest
                    in_use.add(digest)
        return protected, in_use

    started = time.perf_counter()
    protected_a, in_use_a = populate("a")
    protected_b, in_use_b = populate("b")
    total_tags = args.repos * args.tags
    print(f"pushed 2 x {total_tags} tags in {time.perf_counter() - started:.1f}s", flush=True)

    def plan_for(prefix: str, in_use: set[str]):
        t0 = time.perf_counter()
        found = inventory_registry(registry, [f"bench-{run}-{prefix}/*"], concurrency=args.concurrency)
        plan = plan_cleanup(found.images, policy, in_use, existing=found.existing)
        return plan, time.perf_counter() - t0, len(found.images)

    plan_a, plan_s, tags_a = plan_for("a", in_use_a)
    print(f"plan: {tags_a} tags, {len(plan_a.deletions())} manifests to delete, {len(plan_a.untags())} untags "
          f"in {plan_s:.2f}s", flush=True)
    applied = apply_registry_cleanup(registry, plan_a, concurrency=args.concurrency)
    print(f"apply ({args.concurrency} at a time): {applied.seconds:.2f}s", flush=True)

    plan_b, _, _ = plan_for("b", in_use_b)
    assert len(plan_b.deletions()) == len(plan_a.deletions())
    sequential = apply_registry_cleanup(registry, plan_b, concurrency=1)
    print(f"apply (one at a time): {sequential.seconds:.2f}s", flush=True)

    missing = [ref for ref in {**protected_a, **protected_b}
               if not manifest_exists(http, ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1])]
    result = {
        "tags": tags_a, "repositories": args.repos, "deleted_manifests": len(applied.deleted_manifests),
        "untagged": len(applied.untagged), "plan_s": round(plan_s, 2), "apply_s": round(applied.seconds, 2),
        "sequential_apply_s": round(sequential.seconds, 2),
        "speedup": round(sequential.seconds / applied.seconds, 2) if applied.seconds else None,
        "protected_deleted": len(missing), "concurrency": args.concurrency,
        "targets": {"apply_s": 60, "speedup": 3, "protected_deleted": 0},
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
