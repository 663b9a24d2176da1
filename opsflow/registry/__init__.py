"""The container registry's HTTP API, as opsflow uses it (``ContainerRegistry.get_client()``)."""
