"""The ground layer: errors, the command runner, redaction, the Prefect REST helper and thread context.

Everything above imports from here; nothing here imports anything of opsflow above it.
"""
