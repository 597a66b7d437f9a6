"""Independent combiner fits side by side: one thread per core, each fit's BLAS on one thread.

A run's evaluation fits several heads that do not depend on each other: the ensemble's, the
untrained reference's and one per member (each member alone, for the diversity figures). lbfgs
spends their time in numpy's matrix products, which release the GIL, so they run side by side in
threads. Fits side by side on one BLAS thread each finish sooner than the same fits in turn on all
the cores (the figures: docs/performance.md#figures-behind-design-choices and its 2026-12-07 entry
on the heads' threads), so each fit keeps one BLAS thread and the cores go to the fits. A run's
heads gave the same predictions either way (coefficients within 1e-7); a product's threads can
still move its last bits, and on label curves' small fits a few draws moved by an image. The
threads a fit gets depend only on the jobs and the cores, so a machine repeats its own results.

Only numpy's BLAS gets the threads (`fit_threads`). lbfgs's own optimiser (scipy's L-BFGS-B) calls
scipy's BLAS, a second OpenBLAS in pip's wheels, for vectors of some thousand numbers: threaded, its
threads spin against numpy's. One 48,000-row fit with both on 2 threads took 2.6 times as long as with
numpy's alone on 2, and a lone fit (the baseline's head) ran that way before.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

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
    with fit_threads(blas_threads(len(jobs), cores)):
        if workers == 1:
            return [job() for job in jobs]
        with ThreadPoolExecutor(workers, thread_name_prefix="combiner-fit") as pool:
            futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]


_SETTING = threading.Lock()
_held: list[ExitStack] = []  # the limits set by the first fit_threads entered, while any is
_entered = [0]               # how many are entered now, in any thread


@contextmanager
def fit_threads(threads: Optional[int] = None) -> Iterator[None]:
    """Within it, every BLAS but numpy's runs one thread: scipy's, which lbfgs's optimiser calls for
    small vectors (see the module docstring). `threads`: numpy's BLAS and OpenMP (scikit-learn's loss)
    threads; None leaves them as they are (an actor's OMP_NUM_THREADS, a caller's own limits). Where
    numpy and scipy share one BLAS library (conda's), that one gets `threads`.

    The libraries' thread counts are the process's, not a thread's: the first one entered sets them
    and the last one to leave restores them, so fits entering and leaving in several threads at once
    (`side_by_side`'s, a caller's own) never leave them changed; one entered while another is
    changes nothing."""
    with _SETTING:
        if _entered[0] == 0:
            _held.append(limited_threads(threads))
        _entered[0] += 1
    try:
        yield
    finally:
        with _SETTING:
            _entered[0] -= 1
            if _entered[0] == 0:
                _held.pop().close()


def limited_threads(threads: Optional[int]) -> ExitStack:
    """`fit_threads`' limits, set now; closing the stack restores what was there before."""
    controller = ThreadpoolController()
    blas = controller.select(user_api="blas")
    numpy_blas = [pool.filepath for pool in blas.lib_controllers if in_numpy(pool.filepath)]
    others = [pool.filepath for pool in blas.lib_controllers if numpy_blas and pool.filepath not in numpy_blas]
    limits = ExitStack()
    if threads is not None:
        limits.enter_context(controller.limit(limits=threads))
    if others:
        limits.enter_context(blas.select(filepath=others).limit(limits=1))
    return limits


def in_numpy(library: str) -> bool:
    """Whether a loaded library is numpy's own (a wheel's `numpy.libs/` or `numpy/.dylibs/`)."""
    package = os.path.dirname(os.path.realpath(np.__file__))
    return os.path.realpath(library).startswith((package + os.sep, package + ".libs" + os.sep))
