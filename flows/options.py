"""``@flow`` options the pipelines share, and the ``flow`` decorator of the pipelines that declare their first
block reads. A light module (Prefect's flow class and settings, ``blocks.loading``): the deploy flow, which edge
nodes import, takes its options from here without the build server's reporting and trust modules."""

from __future__ import annotations

from pathlib import Path

from prefect import Flow as PrefectFlow
from prefect.settings import get_current_settings

from blocks.loading import start_declared_reads

#: ``@flow`` options of a pipeline whose return value nobody reads back (its report is the run's artifacts, the
#: commit status, the PR comment, the deploy records): the value is not persisted, and the result storage is
#: named, so Prefect 3.8 does not ask the server for its default result storage as the run starts (three round
#: trips before the first task: two in ``ResultStore.update_for_flow``, one deciding ``persist_result``;
#: 0.04-0.3 s each measured at load 12). The path is Prefect's own local storage setting; nothing is written
#: there. Side effect: a server configured with a default result storage gets no results of these flows.
UNPERSISTED_RESULT = {"persist_result": False,
                      "result_storage": Path(get_current_settings().results.local_storage_path)}


class Flow(PrefectFlow):
    """A Prefect flow whose call starts the block reads its function declares (``blocks.loading.reads_blocks_first``)
    before Prefect's engine creates and starts the run, as a worker's run process does before ``run_flow``.

    A flow called in a process (a script, a notebook, a parent flow, ``bench/``) otherwise reads its blocks after
    the engine's round trips: on the default stack the engine took 55-65 ms from the call to the flow's body, and
    the manual deploy's blocks 40-45 ms more. Read beside those trips, a manual deploy ended 14 ms sooner (medians of
    3 x 10 alternating deploys, 396 ms against 410 ms): the server, one Python process, answers the read and the
    engine's requests mostly one after the other (``bench/deploy.py``). Everything else is Prefect's ``Flow``; a copy
    made with ``with_options`` is a plain Prefect flow (it reads its blocks when it gets to them)."""

    def __call__(self, *args, return_state: bool = False, wait_for=None, **kwargs):
        start_declared_reads(self.fn, args, kwargs)
        return super().__call__(*args, return_state=return_state, wait_for=wait_for, **kwargs)


def flow(**options):
    """``@prefect.flow(**options)`` making a :class:`Flow` (Prefect's decorator always makes its own class)."""
    def decorate(fn) -> Flow:
        return Flow(fn=fn, **options)
    return decorate
