"""``opsflow webhook serve``: signed forge deliveries → GitOps/MLOps deployment runs."""
