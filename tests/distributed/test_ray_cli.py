"""``trellis run/resume --executor ...`` (a local Ray: the session's, see conftest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli.helpers import invoke, write_items
from trellis.mockserver import MockServerThread


def numbers(n: int) -> list[dict[str, Any]]:
    """The inputs of ``n`` items of ``distributed.flows:where``."""
    return [{"x": i} for i in range(n)]


def test_executor_ray_with_a_sqlite_store_is_one_clear_error(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", numbers(2))
    result = invoke(
        "run", "distributed.flows:where", "--input-file", str(items),
        "--store", f"sqlite:///{tmp_path / 'runs.db'}", "--executor", "ray",
    )  # fmt: skip
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "PostgreSQL" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_executor_is_a_usage_error(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", numbers(1))
    result = invoke(
        "run", "distributed.flows:where", "--input-file", str(items), "--no-store",
        "--executor", "dask",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "expected local, ray, ray:auto or ray://HOST:PORT" in result.stderr


def test_a_batch_on_ray_with_postgres_then_resumed_on_ray(
    ray_session: Any, pg_url: str, tmp_path: Path
) -> None:
    items = write_items(tmp_path / "items.jsonl", numbers(8))
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run", "distributed.flows:where", "--input-file", str(items), "--store", pg_url,
        "--executor", "ray", "--run-id", "cli-batch", "--output", str(out), "-n", "4",
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["outputs"]["doubled"]["double"] for r in rows] == [2 * i for i in range(8)]
    assert "8 done" in result.stdout + result.stderr
    again = invoke("resume", "cli-batch", "--store", pg_url, "--executor", "ray")
    assert again.exit_code == 0, (again.stdout, again.stderr)


def test_a_batch_budget_on_ray_holds_over_the_batch_and_its_resume(
    ray_session: Any, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.txt"
    items = write_items(
        tmp_path / "items.jsonl", [{**item, "log_path": str(log)} for item in numbers(8)]
    )
    with MockServerThread(seed=0) as server:
        model = f"default=openai:mock-model?base_url={server.openai_base_url}"
        result = invoke(
            "run", "distributed.flows:budgeted", "--input-file", str(items), "--store", pg_url,
            "--executor", "ray", "--run-id", "budget-batch", "-n", "4", "--model", model,
            "--budget-calls", "3",
        )  # fmt: skip
        sent = server.stats.requests
        again = invoke("resume", "budget-batch", "--store", pg_url, "--executor", "ray")
        sent_after = server.stats.requests
    out = result.stdout + result.stderr
    assert result.exit_code != 0, out
    assert sent == 3, out  # the budget, across both workers: not a request more
    assert "3 done" in out and "5 failed" in out and "max_calls=3" in out, out
    # The resume counts what the batch spent (the durable tally the driver kept in sync).
    assert sent_after == 3, (again.stdout, again.stderr)
    assert "3 request(s)" in again.stdout + again.stderr


FLOW_FILE = '''
from pydantic import BaseModel

import trellis as tl


class Doubled(BaseModel):
    value: int


flow = tl.Flow("from_a_file", inputs={"x": int})


@flow.step
def double(x: int) -> Doubled:
    return Doubled(value=2 * x)
'''


def test_a_flow_given_by_file_path_runs_on_workers_that_cannot_import_it(
    ray_session: Any, tmp_path: Path
) -> None:
    """The workers' Python path has only the tests' folder, not the flow file's: its module
    (and the pydantic model defined in it) reaches them by value. Before, every item
    failed with ModuleNotFoundError on the workers."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "doubling_flow_on_ray.py").write_text(FLOW_FILE)
    items = write_items(tmp_path / "items.jsonl", numbers(4))
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run", f"{folder / 'doubling_flow_on_ray.py'}:flow", "--input-file", str(items),
        "--no-store", "--executor", "ray", "--output", str(out), "-n", "2",
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["done"] * 4
    assert [r["outputs"]["double"]["value"] for r in rows] == [0, 2, 4, 6]
