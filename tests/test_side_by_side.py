"""Independent fits side by side: order kept, errors raised, BLAS threads shared out. No Ray."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from classifier.side_by_side import blas_threads, side_by_side


def test_blas_threads_share_the_cores_out_among_the_jobs_at_once():
    assert blas_threads(jobs=1, cores=8) == 8      # one big fit keeps every core for its products
    assert blas_threads(jobs=2, cores=8) == 4
    assert blas_threads(jobs=3, cores=8) == 2
    assert blas_threads(jobs=41, cores=2) == 1     # a wide run's heads: one thread per fit, fits on the cores
    assert blas_threads(jobs=0, cores=4) == 4


def test_results_come_back_in_job_order_from_several_threads():
    threads = set()

    def job(i):
        threads.add(threading.get_ident())
        return i * i

    assert side_by_side([lambda i=i: job(i) for i in range(12)], cores=3) == [i * i for i in range(12)]
    assert side_by_side([lambda: job(5)], cores=3) == [25]


def test_many_jobs_run_with_one_blas_thread_each_and_the_limit_is_lifted_after():
    if not any(pool["user_api"] == "blas" for pool in threadpool_info()):
        pytest.skip("no BLAS library that threadpoolctl can see")
    before = [pool["num_threads"] for pool in threadpool_info()]
    seen = side_by_side([lambda: [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
                         for _ in range(4)], cores=2)
    assert all(threads == [1] * len(threads) for threads in seen)
    assert [pool["num_threads"] for pool in threadpool_info()] == before


def test_a_failing_job_raises_its_error():
    def fails():
        raise ValueError("bad features")

    with pytest.raises(ValueError, match="bad features"):
        side_by_side([lambda: np.zeros(3), fails, lambda: 1], cores=2)
