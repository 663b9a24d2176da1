"""``@flow`` options the pipelines share. A light module (Prefect's settings only): the deploy flow, which
edge nodes import, takes its options from here without the build server's reporting and trust modules."""

from __future__ import annotations

from pathlib import Path

from prefect.settings import get_current_settings

#: ``@flow`` options of a pipeline whose return value nobody reads back (its report is the run's artifacts, the
#: commit status, the PR comment, the deploy records): the value is not persisted, and the result storage is
#: named, so Prefect 3.8 does not ask the server for its default result storage as the run starts (three round
#: trips before the first task: two in ``ResultStore.update_for_flow``, one deciding ``persist_result``;
#: 0.04-0.3 s each measured at load 12). The path is Prefect's own local storage setting; nothing is written
#: there. Side effect: a server configured with a default result storage gets no results of these flows.
UNPERSISTED_RESULT = {"persist_result": False,
                      "result_storage": Path(get_current_settings().results.local_storage_path)}
