"""A WorkerLoop running in the test's own event loop, stopped with a bound.

    async with running_worker(worker):
        ...  # the worker claims and delivers meanwhile
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from workers.loop import WorkerLoop


@asynccontextmanager
async def running_worker(worker: WorkerLoop, stop_within: float = 30.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` for the body, then ``stop()`` it; fail, with the stacks of the tasks still
    running, if ``run()`` has not returned ``stop_within`` seconds later.

    Not ``asyncio.wait_for(task, ...)``: on timeout that cancels the task and then waits for the
    cancellation without a bound, so a worker that could not stop hung the test (until
    pytest-timeout) instead of failing it. When the body fails, its error stays the one reported
    and a worker that did not stop is a note on it.
    """
    task = asyncio.create_task(worker.run(), name=f"worker {worker.token}")
    try:
        yield task
    except BaseException as exc:
        problem = await _stop(worker, task, stop_within)
        if problem is None and not task.cancelled() and task.exception() is not None:
            problem = f"WorkerLoop.run() failed too: {task.exception()!r}"
        if problem is not None:
            exc.add_note(problem)
        raise
    problem = await _stop(worker, task, stop_within)
    if problem is not None:
        raise AssertionError(problem)
    await task  # run()'s own error, if any


async def _stop(worker: WorkerLoop, task: asyncio.Task[None], timeout: float) -> str | None:
    """None when ``run()`` returned in time; else what was still running (and the task is cancelled)."""
    worker.stop()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        return None
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        if other is not asyncio.current_task():
            other.print_stack(file=stacks)
    task.cancel()
    return f"WorkerLoop.run() did not return within {timeout:g}s of stop(); tasks still running:\n{stacks.getvalue()}"
