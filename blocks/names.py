"""Default names: the blocks the local stack creates and the deployments use, the work pools, the
deployment names. Defined here once; flows, the stack, the CLI, the demo and the webhook import them.

``deployments/prefect.yaml`` names the same pools and deployments (YAML cannot import them);
``tests/unit/test_names.py`` checks that it agrees with this module.
"""

from __future__ import annotations

# Blocks (type slug / name): what `opsflow stack up` creates and the flows use when not told otherwise.
ARTIFACT_STORE = "opsflow-artifacts"  #: opsflow-object-store: build artifacts and deploy records
DATA_STORE = "opsflow-data"  #: opsflow-object-store: DVC data of ML repositories
REGISTRY = "local-registry"  #: opsflow-container-registry
MLFLOW = "local-mlflow"  #: opsflow-mlflow-server
BUILD_ENGINE = "build-server"  #: opsflow-docker-host: the build server's engine
EDGE_NODE = "edge-local"  #: opsflow-docker-host: the local stack's edge node
CLEANUP_POLICY = "nightly"  #: opsflow-registry-cleanup-policy

# Work pools.
BUILD_POOL = "vault-build"  #: GitOps and MLOps runs on the build server
EDGE_POOL = "edge"  #: deploys; one queue per edge node, named as the node's Docker host block
KUBERNETES_POOL = "kubernetes"

# Deployment names (a deployment is ``<flow name>/<deployment name>``).
DEFAULT_DEPLOYMENT = "default"  #: the webhook starts ``<flow>/default``
NIGHTLY_DEPLOYMENT = "nightly"  #: the scheduled cleanups
TRUSTED_LABEL = "safe-to-test"  #: the label a maintainer adds to run a held pull request
