"""``import trellis`` is cheap: its public names load on first use (PEP 562).

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import trellis as tl


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_importing_the_package_loads_none_of_its_parts() -> None:
    loaded = _modules_after("import trellis")
    assert not {m for m in loaded if m.startswith("trellis.")}
    assert not loaded & {"pydantic", "httpx", "ray", "rich", "asyncio"}


def test_a_name_loads_what_defines_it_and_not_the_engine() -> None:
    loaded = _modules_after("import trellis\ntrellis.Usage")
    assert "trellis.types" in loaded
    assert "trellis.engine.engine" not in loaded
    assert "trellis.cluster.ray_executor" not in loaded


def test_star_import_and_attribute_access_give_the_same_objects() -> None:
    namespace: dict[str, object] = {}
    exec("from trellis import *", namespace)
    assert set(tl.__all__) <= set(namespace)
    for name in tl.__all__:
        assert namespace[name] is getattr(tl, name), name


def test_a_name_is_the_object_of_its_defining_module() -> None:
    from trellis.engine.engine import Engine
    from trellis.flow.flow import Flow

    assert tl.Engine is Engine
    assert tl.Flow is Flow


def test_a_run_without_tracing_imports_nothing_of_opentelemetry() -> None:
    """Tracing costs nothing unless asked for: the package may be installed (it is here,
    with the [otel] extra) and a run still never imports it."""
    import importlib.util

    assert importlib.util.find_spec("opentelemetry") is not None  # installed, yet unused
    loaded = _modules_after(
        "import asyncio, trellis as tl\n"
        "flow = tl.Flow('f', inputs={'text': str})\n"
        "@flow.step\n"
        "async def label(text: str, llm: tl.LLM) -> str:\n"
        "    return await llm.generate(text, model='small')\n"
        "async def main():\n"
        "    async with tl.Engine(models={'small': 'sim:small'}) as e:\n"
        "        assert (await e.run(flow, {'text': 'hi'})).status == 'done'\n"
        "asyncio.run(main())"
    )
    assert "trellis.engine.engine" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "opentelemetry"}
