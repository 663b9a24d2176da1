"""Run by test_databases.py in a process of its own, against the server (PostgreSQL or SQLite) given by
PREFECT_API_URL: save the blocks, run the GitOps PR flow, print the outcome as JSON."""

import json
import os
import sys

from blocks import GitForge
from flows.gitops_pr import gitops_pr
from opsflow.samples import save_shop_blocks

args = json.loads(sys.argv[1])
GitForge(kind="github", api_url=args["forge_url"], token=os.environ["FORGE_TOKEN"]).save("db-forge", overwrite=True)
save_shop_blocks(args["repo_url"], name=args["app"], forge_repo=args["forge_repo"],
                 components=tuple(args.get("components", ("backend", "frontend"))))
state = gitops_pr(app=args["app"], pr=1, sha=args["sha"], forge_block="db-forge", return_state=True)
print("OUTCOME " + json.dumps({"state": state.type.value, "message": state.message,
                               "run_id": str(state.state_details.flow_run_id)}))
