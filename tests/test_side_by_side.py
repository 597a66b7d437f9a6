"""Independent fits side by side: order kept, errors raised, BLAS threads shared out. No Ray."""

import threading

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits

from classifier.combiner import EnsembleCombiner, fit_combiner
from classifier.side_by_side import blas_threads, fit_threads, in_numpy, side_by_side


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


def blas_pools() -> dict[str, int]:
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def needs_numpys_own_blas_and_another():
    import scipy.linalg  # noqa: F401 (loads scipy's BLAS, as lbfgs does)
    pools = blas_pools()
    if not any(in_numpy(path) for path in pools) or all(in_numpy(path) for path in pools):
        pytest.skip("numpy and scipy share one BLAS library here (conda's): nothing to tell apart")


def test_a_lone_fit_keeps_numpys_blas_threads_and_puts_every_other_blas_on_one():
    needs_numpys_own_blas_and_another()
    with threadpool_limits(limits=2, user_api="blas"):
        with fit_threads():
            inside = blas_pools()
        after = blas_pools()
    assert {path: n for path, n in inside.items() if in_numpy(path)} == {p: 2 for p in inside if in_numpy(p)}
    assert {n for path, n in inside.items() if not in_numpy(path)} == {1}
    assert set(after.values()) == {2}


def test_side_by_side_gives_numpys_blas_the_cores_of_a_lone_job_and_scipys_one():
    needs_numpys_own_blas_and_another()
    [inside] = side_by_side([blas_pools], cores=2)
    assert {in_numpy(path): n for path, n in inside.items()} == {True: 2, False: 1}


def test_a_combiners_head_is_fitted_with_the_optimisers_blas_on_one_thread(monkeypatch):
    needs_numpys_own_blas_and_another()
    import classifier.combiner
    seen = []

    class Recording(LogisticRegression):
        def fit(self, X, y, *args, **kwargs):
            seen.append(blas_pools())
            return super().fit(X, y, *args, **kwargs)

    monkeypatch.setattr(classifier.combiner, "LogisticRegression", Recording)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    features = [rng.normal(size=(90, 5)) + labels[:, None] for _ in range(2)]
    fit_combiner("concat", "logistic", features, labels)
    EnsembleCombiner(kind="soft-vote", member_widths=(5, 5)).fit(np.hstack(features), labels)
    assert len(seen) == 3  # the concat head and the two voting members' heads
    assert all({n for path, n in pools.items() if not in_numpy(path)} == {1} for pools in seen)


def test_fits_entering_and_leaving_in_several_threads_leave_the_threads_as_they_found_them():
    needs_numpys_own_blas_and_another()
    before = blas_pools()
    first, second = fit_threads(), fit_threads(1)  # as two fits in two threads: entered, then left out of order
    first.__enter__()
    limited = blas_pools()
    second.__enter__()
    assert blas_pools() == limited  # entered while another is: changes nothing
    first.__exit__(None, None, None)
    assert blas_pools() == limited  # the second fit is still running: its limits stand
    second.__exit__(None, None, None)
    assert blas_pools() == before
