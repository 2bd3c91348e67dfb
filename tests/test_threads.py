"""Elastic threads (:mod:`mirflow.core.threads`): how the core budget is divided among busy workers,
how a worker applies its allowance, and how the local executor publishes it."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from mirflow.core import threads
from mirflow.core.threads import apply_thread_allowance, shares


@pytest.fixture(autouse=True)
def _not_elastic_afterwards():
    yield
    threads.uninstall()


@pytest.mark.parametrize("budget, busy, expected", [
    (2, 1, [2]), (2, 2, [1, 1]), (3, 2, [2, 1]), (8, 3, [3, 3, 2]), (2, 3, [1, 1, 1]),
    (4, 4, [1, 1, 1, 1]), (0, 1, [1]), (4, 0, [])])
def test_shares_divide_the_budget_among_busy_workers(budget: int, busy: int, expected: list[int]) -> None:
    assert shares(budget, busy) == expected
    if busy and budget >= busy:
        assert sum(shares(budget, busy)) == budget  # no core left idle


def test_a_process_without_a_source_is_not_elastic() -> None:
    assert threads.allowance() is None and threads.ceiling() == 0
    assert apply_thread_allowance() is None


def test_the_allowance_is_clamped_to_one_and_the_ceiling() -> None:
    value = SimpleNamespace(value=5)
    threads.install(lambda: value.value, 2)
    assert threads.allowance() == 2 and threads.ceiling() == 2
    value.value = 0
    assert threads.allowance() == 1


def _blas_threads() -> int | None:
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


def test_apply_sets_torch_threads_of_the_calling_thread_and_blas() -> None:
    """Applied in a thread of its own (torch's thread count is per thread), then restored."""
    torch = pytest.importorskip("torch")
    import numpy  # noqa: F401 - loads the BLAS library threadpoolctl limits
    from threadpoolctl import threadpool_limits

    value = SimpleNamespace(value=2)
    threads.install(lambda: value.value, 2)
    seen: list[tuple[int | None, int, int | None]] = []

    def work() -> None:
        for n in (2, 1, 2):
            value.value = n
            seen.append((apply_thread_allowance(), torch.get_num_threads(), _blas_threads()))

    main_before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools on exit
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert [s[:2] for s in seen] == [(2, 2), (1, 1), (2, 2)]
    torch.set_num_threads(main_before)  # torch's global default for new threads
    # the BLAS pools, from the thread that applies the allowance in a worker (its main thread; a
    # count OpenBLAS is given from another thread after that does not always hold)
    main: list[int | None] = []
    with threadpool_limits(limits=None):
        for n in (1, 2, 1):
            value.value = n
            apply_thread_allowance()
            main.append(_blas_threads())
    if main[0] is not None:  # a BLAS library is loaded: its pool followed
        assert main == [1, 2, 1]
    torch.set_num_threads(main_before)


class _Slot(SimpleNamespace):
    pass


def test_the_process_backend_publishes_shares_to_busy_slots_only() -> None:
    from mirflow.executors.process import ProcessBackend

    backend = ProcessBackend([], device="cpu", threads=1, cores=2)
    slots = [_Slot(allowance=SimpleNamespace(value=1)) for _ in range(2)]
    backend.share_cores(slots, [0])
    assert [s.allowance.value for s in slots] == [2, 1]  # 2 cores, 1 busy worker: 2 threads
    backend.share_cores(slots, [0, 1])
    assert [s.allowance.value for s in slots] == [1, 1]  # 2 busy: 1 each
    backend.share_cores(slots, [1])
    assert [s.allowance.value for s in slots] == [1, 2]
    fixed = ProcessBackend([], device="cpu", threads=1, cores=1)
    slots = [_Slot(allowance=SimpleNamespace(value=1))]
    fixed.share_cores(slots, [0])
    assert slots[0].allowance.value == 1  # budget = one thread per worker: nothing to lend
