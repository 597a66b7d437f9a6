"""Independent combiner fits side by side: one thread per core, each fit's BLAS on one thread.

A run's evaluation fits several heads that do not depend on each other: the ensemble's, the
untrained reference's and one per member (each member alone, for the diversity figures). lbfgs
spends their time in numpy's matrix products, which release the GIL, so they run side by side in
threads. OpenBLAS threading one product over 2 cores gains nothing at these sizes and loses on
small ones (the figures: docs/performance.md#figures-behind-design-choices), so each fit keeps
one BLAS thread and the cores go to the fits. The arithmetic per product is the same either way: the
predictions agree exactly (coefficients to within 1e-7).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container or `taskset` limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def blas_threads(jobs: int, cores: int) -> int:
    """BLAS threads per job when `jobs` run at once on `cores`: the cores shared out, at least one."""
    return max(1, cores // max(1, min(jobs, cores)))


def side_by_side(jobs: Sequence[Callable[[], T]], cores: Optional[int] = None) -> list[T]:
    """Each job's result, in order: the jobs run in up to `cores` threads (default: this process's
    cores), with BLAS limited so that threads times BLAS threads stays within the cores. The first
    exception a job raises is raised here, after the others finished."""
    cores = cores or available_cores()
    workers = max(1, min(len(jobs), cores))
    with threadpool_limits(limits=blas_threads(len(jobs), cores)):  # BLAS and OpenMP pools alike
        if workers == 1:
            return [job() for job in jobs]
        with ThreadPoolExecutor(workers, thread_name_prefix="combiner-fit") as pool:
            futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]
