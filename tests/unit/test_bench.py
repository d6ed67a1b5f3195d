"""The benchmark's own readings: wrk's summary, the Lua script that walks wrk over many paths
(driven by a real wrk against a real server on 127.0.0.1), and a process tree's CPU time read
from /proc (this test's own process, and a real child with a grandchild that burns CPU)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from bench.load import parse_wrk, path_walk_script, run_wrk, tree_cpu_seconds

# What wrk 4.1 prints with --latency against a server that answered some 404s.
WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:41235/npm/bench-big
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    37.09ms   12.40ms 120.51ms   71.22%
    Req/Sec   499.73     61.20   640.00     68.33%
  Latency Distribution
     50%   35.20ms
     75%   42.11ms
     90%   51.07ms
     99%   80.93ms
  2983 requests in 3.00s, 5.61GB read
  Non-2xx or 3xx responses: 12
Requests/sec:    993.62
Transfer/sec:      1.87GB
"""


def test_wrk_summary_is_read_from_its_output() -> None:
    summary = parse_wrk(WRK_OUTPUT)
    assert summary.requests == 2983
    assert summary.seconds == pytest.approx(3.0)
    assert summary.rate == pytest.approx(993.62)
    assert summary.latency_ms == pytest.approx(37.09)
    assert summary.non_2xx == 12


@pytest.mark.parametrize(
    ("latency", "duration", "milliseconds", "seconds"),
    [("812.50us", "3.00s", 0.8125, 3.0), ("1.20s", "1.00m", 1200.0, 60.0)],
)
def test_wrk_times_are_read_in_every_unit(
    latency: str, duration: str, milliseconds: float, seconds: float
) -> None:
    text = WRK_OUTPUT.replace("37.09ms", latency).replace("in 3.00s", f"in {duration}")
    summary = parse_wrk(text)
    assert summary.latency_ms == pytest.approx(milliseconds)
    assert summary.seconds == pytest.approx(seconds)
    assert parse_wrk(text.replace("  Non-2xx or 3xx responses: 12\n", "")).non_2xx == 0


def test_a_run_that_printed_no_summary_is_an_error() -> None:
    refused = "unable to connect to 127.0.0.1:1 Connection refused\n"
    with pytest.raises(ValueError, match="not a wrk summary"):
        parse_wrk(refused)


def test_the_walk_script_takes_request_paths_only() -> None:
    with pytest.raises(ValueError, match="no paths"):
        path_walk_script([])
    for bad in ("npm/a.tgz", '/a"; os.exit() --', "/caf\u00e9"):
        with pytest.raises(ValueError, match="not a plain request path"):
            path_walk_script(["/ok", bad])


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
async def test_wrk_walks_every_path_and_counts_what_it_completed(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text=request.headers.get("X-Bench", ""))

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    paths = [f"/npm/pkg-{index}/-/pkg-{index}-1.0.0.tgz" for index in range(30)]
    script = tmp_path / "walk.lua"
    script.write_text(path_walk_script(paths), encoding="utf-8")
    summary = await run_wrk(
        str(server.make_url("/")).rstrip("/") + paths[0], 1, 2, {"X-Bench": "yes"}, script
    )
    assert set(seen) == set(paths)
    # wrk counts the answers it read; the server may have answered a few more at the stop
    assert 0 < summary.requests <= len(seen)
    assert summary.latency_ms > 0


def _burn(cpu_seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < cpu_seconds:
        pass


def test_cpu_of_this_process_grows_by_what_it_burns() -> None:
    before = tree_cpu_seconds([os.getpid()])
    _burn(0.3)
    after = tree_cpu_seconds([os.getpid()])
    assert 0.25 <= after - before < 5  # whole clock ticks: 10 ms each, commonly


def test_cpu_of_a_tree_counts_children_of_children() -> None:
    # The child starts a grandchild that burns 0.6 s of CPU, says so, then sleeps; the child
    # itself only waits. Bounded: everything is killed, at the latest after 30 s of sleep.
    grandchild = textwrap.dedent(
        """
        import sys, time
        started = time.process_time()
        while time.process_time() - started < 0.6:
            pass
        print("burnt", flush=True)
        time.sleep(30)
        """
    )
    child = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {grandchild!r}], timeout=60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "burnt\n"
        tree = tree_cpu_seconds([process.pid])
        assert tree >= 0.55  # the child's own start-up is well under that
        assert tree_cpu_seconds([process.pid, process.pid]) == tree  # a root counts once
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    assert tree_cpu_seconds([process.pid]) == 0.0  # gone: nothing to read
