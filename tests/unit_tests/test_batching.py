"""The generation queue: concurrent callers' jobs run together, errors stay with their caller."""

import threading

import pytest

from langchain_llava_cot.backends._batching import BatchQueue


def test_jobs_that_arrive_together_run_in_one_batch():
    seen: list[int] = []
    release = threading.Event()

    def run(jobs):
        release.wait(5)  # the first batch holds the worker while the others queue up
        seen.append(len(jobs))
        return [job.payload * 10 for job in jobs]

    queue = BatchQueue(run, window=0.0)
    futures = [queue.submit("x", i) for i in range(5)]
    release.set()
    assert [f.result(5) for f in futures] == [0, 10, 20, 30, 40]
    assert sum(seen) == 5 and len(seen) <= 2 and queue.batches == len(seen)
    queue.close()


def test_a_failing_batch_is_retried_one_job_at_a_time_so_only_the_bad_job_fails():
    def run(jobs):
        if any(job.payload == "bad" for job in jobs):
            if len(jobs) > 1:
                raise RuntimeError("the whole batch failed")
            raise ValueError("bad input")
        return [job.payload.upper() for job in jobs]

    release = threading.Event()
    queue = BatchQueue(lambda jobs: (release.wait(5), run(jobs))[1], window=0.0)
    futures = [queue.submit("x", p) for p in ("a", "bad", "c")]
    release.set()
    assert futures[0].result(5) == "A" and futures[2].result(5) == "C"
    with pytest.raises(ValueError, match="bad input"):
        futures[1].result(5)
    queue.close()


def test_a_job_cancelled_while_queued_is_dropped_and_the_worker_keeps_serving():
    release = threading.Event()
    ran: list[str] = []

    def run(jobs):
        release.wait(5)  # the first batch holds the worker while the others queue up
        ran.extend(job.payload for job in jobs)
        return [job.payload.upper() for job in jobs]

    queue = BatchQueue(run, window=0.0)
    first, gone, kept = (queue.submit("x", p) for p in ("a", "gone", "c"))
    assert gone.cancel()  # an async caller stopped waiting (asyncio.wrap_future cancels it)
    release.set()
    assert first.result(5) == "A" and kept.result(5) == "C"
    assert "gone" not in ran and queue.dropped == 1
    assert queue.submit("x", "d").result(5) == "D"  # the worker is alive
    queue.close()


def test_a_job_cancelled_while_it_runs_finishes_and_its_result_is_discarded():
    started, release = threading.Event(), threading.Event()

    def run(jobs):
        started.set()
        release.wait(5)
        return [job.payload for job in jobs]

    queue = BatchQueue(run, window=0.0)
    running = queue.submit("x", "a")
    assert started.wait(5)
    assert not running.cancel()  # too late: it is in the model call
    release.set()
    assert running.result(5) == "a" and queue.dropped == 0
    assert queue.submit("x", "b").result(5) == "b"
    queue.close()


def test_a_result_that_is_an_exception_is_raised_to_its_caller():
    queue = BatchQueue(lambda jobs: [KeyError(job.payload) for job in jobs], window=0.0)
    with pytest.raises(KeyError):
        queue.submit("x", "missing").result(5)
    queue.close()


def test_close_finishes_queued_jobs_then_refuses_new_ones():
    queue = BatchQueue(lambda jobs: [job.payload for job in jobs], window=0.01, max_jobs=2)
    futures = [queue.submit("x", i) for i in range(5)]
    queue.close()
    assert [f.result(5) for f in futures] == list(range(5)) and queue.closed
    with pytest.raises(RuntimeError, match="was closed"):
        queue.submit("x", 5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window >= 0 and max_jobs >= 1"):
        BatchQueue(lambda jobs: [], max_jobs=0)
