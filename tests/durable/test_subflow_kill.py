"""A process really killed (SIGKILL) between two steps of a sub-flow, then resumed by a
new process: the child continues inside, nothing that completed runs or is paid twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
    pytest.mark.serial,  # a real process killed mid-run
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path

    import trellis as tl
    from trellis.store import SQLiteStore

    work = Path(sys.argv[1])
    counter = work / "counter.txt"

    def hit(name):
        with counter.open("a", encoding="utf-8") as f:
            f.write(name + "\\n")

    def model_fn(request):
        hit("call:" + request.messages[-1].content)
        return "ok"

    child = tl.Flow("child", inputs={"x": str})

    @child.step
    async def first(x: str, llm: tl.LLM) -> str:
        hit("first:" + x)
        return await llm.generate("first " + x, model="m")

    @child.step
    async def second(first: str, x: str, llm: tl.LLM) -> str:
        hit("second:" + x)
        kill = work / "kill"
        if x == "b" and kill.exists():
            kill.unlink()
            os.kill(os.getpid(), signal.SIGKILL)  # between the child's steps
        return await llm.generate("second " + x, model="m") + first

    parent = tl.Flow("parent", inputs={"xs": list[str]}, concurrency=1)
    parent.subflow(child, name="each", inputs={"x": "xs"}, map_over="xs")

    async def main():
        store = SQLiteStore(work / "t.db")
        model = tl.FunctionModel(model_fn, name="function:test")
        async with tl.Engine(store=store, models={"m": model}, lease_ttl=1.0) as engine:
            result = await engine.run(parent, {"xs": ["a", "b"]}, run_id="k")
        store.close()
        print(result.status, result.outputs.get("each"), result.usage.calls)

    asyncio.run(main())
    """
)


def test_a_kill_between_child_steps_resumes_inside_the_child(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    (tmp_path / "kill").touch()
    first = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert first.returncode == -9, first.stderr
    killed = Counter((tmp_path / "counter.txt").read_text().split("\n"))
    assert killed["second:b"] == 1 and killed["call:second b"] == 0
    time.sleep(1.2)  # the dead process's lease (1 s) expires
    second = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.split()[0] == "done", second.stdout
    assert "['okok', 'okok']" in second.stdout
    counts = Counter(line for line in (tmp_path / "counter.txt").read_text().split("\n") if line)
    assert counts == {
        "first:a": 1,
        "second:a": 1,
        "first:b": 1,  # completed before the kill: restored inside the child
        "second:b": 2,  # killed while running: runs again
        "call:first a": 1,
        "call:second a": 1,
        "call:first b": 1,  # paid once
        "call:second b": 1,
    }
    assert second.stdout.split()[-1] == "4", "the resumed run accounts for all four calls"
