"""Run by test_postgres.py in a process of its own, against the PostgreSQL-backed server given by
PREFECT_API_URL: save the blocks, run the GitOps PR flow, print the outcome as JSON."""

import json
import os
import sys

from blocks import GitForge
from flows.gitops_pr import gitops_pr
from opsflow.samples import save_shop_blocks

args = json.loads(sys.argv[1])
GitForge(kind="github", api_url=args["forge_url"], token=os.environ["FORGE_TOKEN"]).save("pg-forge", overwrite=True)
save_shop_blocks(args["repo_url"], name="shop-pg", forge_repo=args["forge_repo"])
state = gitops_pr(app="shop-pg", pr=1, sha=args["sha"], forge_block="pg-forge", return_state=True)
print("OUTCOME " + json.dumps({"state": state.type.value, "message": state.message,
                               "run_id": str(state.state_details.flow_run_id)}))
