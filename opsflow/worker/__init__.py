"""The Prefect worker type ``opsflow``: flow runs started in well under a second, each in its own process.

The stock process worker polls every few seconds and starts each run in a fresh interpreter that
imports Prefect again (~6-12 s from creation to the first task here). ``OpsflowWorker``
(:mod:`~opsflow.worker.prefect_worker`, registered for ``prefect worker start --type opsflow``) is a
``BaseWorker`` that is woken by the server's event stream (:mod:`~opsflow.worker.watch`), claims
what the server lets it claim, and forks each run from a zygote that has imported Prefect and the
flow modules once (:mod:`~opsflow.worker.zygote`); the child runs the flow run with Prefect's engine
(:mod:`~opsflow.worker.runner`). The pools' job variables are :mod:`~opsflow.worker.job`; records of
run processes and crash reconciliation :mod:`~opsflow.worker.records`; final-state reports
:mod:`~opsflow.worker.states`; the only private Prefect names :mod:`~opsflow.worker.prefect_adapter`;
:mod:`~opsflow.worker.cli` is ``opsflow worker start``.
"""
