"""Flows the Ray tests run. Ray workers import this module (``tests`` is on their
``PYTHONPATH``, see conftest), so its functions are sent by reference, not by value."""

from __future__ import annotations

import asyncio
import os
import re
import time

import trellis as tl

where = tl.Flow("where")


@where.step
def doubled(x: int) -> dict[str, int]:
    """The item's value doubled, and the process that ran it."""
    return {"double": 2 * x, "pid": os.getpid()}


def log(path: str, line: str) -> None:
    """Append ``line`` to the shared log file (one write: lines never interleave)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{line}\n")


def paid_reply(request: tl.ModelRequest) -> str:
    """The model every worker calls: it logs each call it answers (what would be paid)."""
    text = " ".join(str(m.content) for m in request.messages)
    found = re.search(r"LOG=(\S+) ITEM=(\d+)", text)
    if found is None:
        raise AssertionError(f"no LOG=... ITEM=... in the prompt: {text!r}")
    log(found[1], f"call {found[2]}")
    return '"ok"'


faulty = tl.Flow("faulty")


@faulty.step
def first(x: int, log_path: str) -> int:
    log(log_path, f"first {x}")
    return x


@faulty.step
async def paid(first: int, log_path: str, llm: tl.LLM) -> str:
    return await llm.generate(f"LOG={log_path} ITEM={first}", output=str)


@faulty.step
async def second(paid: str, first: int, log_path: str, hold: float) -> int:
    log(log_path, f"second-start {first} {os.getpid()}")
    await asyncio.sleep(hold)
    log(log_path, f"second-end {first}")
    return first * 10


def spin(seconds: float) -> None:
    """Pure-Python work for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


limited = tl.Flow("limited")


@limited.step
async def answer(x: int, llm: tl.LLM) -> str:
    """One model call per item (against a rate-limited mock server)."""
    return await llm.generate(f"Say something about item {x}.", output=str)


budgeted = tl.Flow("budgeted")


@budgeted.step
async def spend(x: int, log_path: str, llm: tl.LLM) -> dict[str, int]:
    """One paid call per item, and the worker that made it."""
    await llm.generate(f"LOG={log_path} ITEM={x}", output=str)
    return {"x": x, "pid": os.getpid()}
