"""Parallelism across cores: worker processes for CPU-bound transforms, threads for blocking ones.

* :class:`ProcessPool` / :func:`open_process_pool`: worker processes that apply one picklable
  function to whole micro-batches (one pickle per batch each way).
* :func:`run_with_executor`: how a :class:`~haive.dataflow.runtime.nodes.TransformNode` with
  ``executor="process"`` or ``executor="thread"`` runs: batches are split into chunks for
  ``concurrency`` workers, results re-ordered when ``ordered=True``.
* :func:`executor_runner`: what pipelines give their graph run, so executor nodes run on
  their executor (the nodes themselves only run inline).
* :func:`apply_parallelism`: what ``StreamingPipeline.enable_parallel_processing`` does.
* :class:`ProcessPoolNode`: a TransformNode whose function runs in worker processes.
"""

from __future__ import annotations

from .errors import NotPicklableError, RemoteError, WorkerError
from .pool import BatchResult, ProcessPool, apply_inline, check_picklable, open_process_pool
from .runner import (
    ParallelSettings,
    ProcessPoolNode,
    apply_parallelism,
    executor_runner,
    run_with_executor,
)

__all__ = [
    "BatchResult",
    "NotPicklableError",
    "ParallelSettings",
    "ProcessPool",
    "ProcessPoolNode",
    "RemoteError",
    "WorkerError",
    "apply_inline",
    "apply_parallelism",
    "check_picklable",
    "executor_runner",
    "open_process_pool",
    "run_with_executor",
]
