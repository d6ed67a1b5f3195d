"""Single-flight, with real asyncio: concurrent callers share one piece of work, a caller that
leaves cancels nothing for the others, errors reach every caller, finished work is forgotten,
nothing is logged as "never retrieved", and close() cancels what runs."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mirror.flight import SingleFlight


class Work:
    """Work that counts its calls and runs until released (or fails when told to)."""

    def __init__(self, value: str = "value", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False
        self.cancelled = False

    async def __call__(self) -> str:
        self.calls += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        if self.error is not None:
            raise self.error
        return f"{self.value} {self.calls}"


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the running loop's exception handler receives (where asyncio reports a task
    exception nobody retrieved)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_callers_share_one_call() -> None:
    joins: list[None] = []
    flight: SingleFlight[str, str] = SingleFlight("test", on_join=lambda: joins.append(None))
    work = Work()
    callers = [asyncio.create_task(flight.run("key", work)) for _ in range(10)]
    await work.started.wait()
    assert "key" in flight
    assert len(flight) == 1
    work.release.set()
    assert await asyncio.gather(*callers) == ["value 1"] * 10
    assert work.calls == 1
    assert len(joins) == 9


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    first, second = Work("first"), Work("second")
    callers = [
        asyncio.create_task(flight.run("a", first)),
        asyncio.create_task(flight.run("b", second)),
    ]
    await first.started.wait()
    await second.started.wait()
    assert len(flight) == 2
    first.release.set()
    second.release.set()
    assert await asyncio.gather(*callers) == ["first 1", "second 1"]


async def test_a_caller_that_leaves_cancels_neither_the_others_nor_the_work() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    work = Work()
    leaving = asyncio.create_task(flight.run("key", work))
    staying = asyncio.create_task(flight.run("key", work))
    await work.started.wait()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert "key" in flight  # still running for the caller that stayed
    work.release.set()
    assert await staying == "value 1"
    assert work.finished
    assert not work.cancelled
    assert work.calls == 1


async def test_work_goes_on_when_every_caller_left_and_a_new_caller_joins_it() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    work = Work()
    leaving = asyncio.create_task(flight.run("key", work))
    await work.started.wait()
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    late = asyncio.create_task(flight.run("key", work))
    await _settle()
    work.release.set()
    assert await late == "value 1"
    assert work.calls == 1


async def test_an_error_reaches_every_caller_and_the_key_is_free_again() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    failure = ValueError("upstream said no")
    work = Work(error=failure)
    callers = [asyncio.create_task(flight.run("key", work)) for _ in range(3)]
    await work.started.wait()
    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert outcomes == [failure, failure, failure]
    assert all(outcome is failure for outcome in outcomes)
    assert "key" not in flight
    work.error = None
    assert await flight.run("key", work) == "value 2"
    assert work.calls == 2


async def test_finished_work_is_forgotten_and_runs_anew() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    work = Work()
    work.release.set()
    assert await flight.run("key", work) == "value 1"
    await _settle()
    assert "key" not in flight
    assert len(flight) == 0
    assert flight.tasks() == []
    assert await flight.run("key", work) == "value 2"
    assert work.calls == 2


async def test_start_runs_work_nobody_waits_for_and_forgets_it() -> None:
    joins: list[None] = []
    flight: SingleFlight[str, str] = SingleFlight("test", on_join=lambda: joins.append(None))
    work = Work()
    task = flight.start("key", work)
    assert flight.tasks() == [task]
    assert flight.start("key", work) is task
    assert len(joins) == 1
    work.release.set()
    assert await task == "value 1"
    await _settle()
    assert "key" not in flight


async def test_an_error_nobody_waits_for_is_not_logged_as_never_retrieved(
    loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    flight: SingleFlight[str, str] = SingleFlight("test")
    work = Work(error=RuntimeError("nobody is left to see this"))
    callers = [asyncio.create_task(flight.run("key", work)) for _ in range(3)]
    await work.started.wait()
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    work.release.set()
    await _settle()
    assert "key" not in flight
    assert work.finished
    del callers
    gc.collect()
    await _settle()
    assert loop_errors == []
    assert "never retrieved" not in caplog.text


async def test_the_never_retrieved_check_above_can_fail(
    loop_errors: list[dict[str, Any]],
) -> None:
    """The same failure in a bare task nobody retrieves is reported: the check above works."""

    async def fail() -> None:
        raise RuntimeError("nobody is left to see this")

    task = asyncio.get_running_loop().create_task(fail())
    await _settle()
    assert task.done()
    del task
    gc.collect()
    await _settle()
    assert [context["message"] for context in loop_errors] == ["Task exception was never retrieved"]


async def test_close_cancels_the_work_in_flight_and_its_callers() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")
    first, second = Work("first"), Work("second")
    callers = [
        asyncio.create_task(flight.run("a", first)),
        asyncio.create_task(flight.run("b", second)),
    ]
    background = flight.start("c", Work("third"))
    await first.started.wait()
    await second.started.wait()
    await flight.close()
    assert first.cancelled
    assert second.cancelled
    assert background.cancelled()
    assert len(flight) == 0
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)


async def test_close_does_not_raise_the_errors_of_work_it_ends() -> None:
    flight: SingleFlight[str, str] = SingleFlight("test")

    async def refuses_to_stop() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("failed while stopping") from None
        return "never"

    task = flight.start("key", refuses_to_stop)
    await _settle()
    await flight.close()
    assert isinstance(task.exception(), ValueError)
    await flight.close()  # nothing left: closing again is a no-op
