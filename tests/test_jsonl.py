"""The jsonl output's writer: every line, in order, however slowly the output is read."""

from __future__ import annotations

import os
import threading
from typing import Any

import orjson

from bitmusa_plugin._outputs.jsonl import JsonlOutput


def _drain(fd: int, into: bytearray, chunk: int) -> threading.Thread:
    """Read ``fd`` to its end, ``chunk`` bytes at a time, in a thread."""

    def run() -> None:
        while data := os.read(fd, chunk):
            into.extend(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _record(n: int) -> dict[str, Any]:
    return {"id": str(n), "pad": "y" * (n % 300)}


async def test_a_slow_reader_holds_the_hooks_and_every_line_arrives_in_order() -> None:
    # A bound far below what is written: the hooks wait for the writer again and again.
    read_end, write_end = os.pipe()
    got = bytearray()
    reader = _drain(read_end, got, 512)
    with open(write_end, "wb") as stream:  # noqa: ASYNC230 (a pipe of the test's own)
        output = JsonlOutput(stream, max_pending=4096, flush_interval=0.0)
        event: Any = {"account": "a"}
        for n in range(2000):
            await output.on_order(_record(n), event)  # type: ignore[arg-type]
        await output.on_shutdown({"version": "0", "command": "t", "accounts": []})
    reader.join()
    os.close(read_end)
    records = [orjson.loads(line) for line in bytes(got).splitlines()]
    assert [r["order"]["id"] for r in records[:-1]] == [str(n) for n in range(2000)]
    assert records[-1]["hook"] == "on_shutdown"
    assert output.lines == 2001


async def test_what_was_written_to_the_stream_itself_goes_out_first() -> None:
    read_end, write_end = os.pipe()
    got = bytearray()
    reader = _drain(read_end, got, 4096)
    with open(write_end, "wb") as stream:  # noqa: ASYNC230 (a pipe of the test's own)
        stream.write(b"before\n")  # still in the stream's own buffer
        output = JsonlOutput(stream)
        await output.on_idle()
        await output.on_shutdown({"version": "0", "command": "t", "accounts": []})
    reader.join()
    os.close(read_end)
    first, second = bytes(got).splitlines()
    assert first == b"before"
    assert orjson.loads(second)["hook"] == "on_shutdown"
