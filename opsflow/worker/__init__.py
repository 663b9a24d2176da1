"""``opsflow worker start``: a Prefect worker that starts flow runs in well under a second.

The stock process worker polls every few seconds and starts each run in a fresh interpreter
that imports Prefect again (~12 s from creation to the first task here). This worker learns of
runs from the server's event stream (:mod:`~opsflow.worker.watch`), claims them as Prefect's
workers do (:mod:`~opsflow.worker.claim`) and forks each one from a zygote that has imported
Prefect and the flow modules once (:mod:`~opsflow.worker.zygote`); the child runs the flow run
with Prefect's engine (:mod:`~opsflow.worker.runner`). :mod:`~opsflow.worker.service` ties it
together; :mod:`~opsflow.worker.cli` is the command line.
"""
