"""Durable runs on the command line: --store / --no-store, --run-id, resume, changed
steps, leases, the response cache, and secrets kept out of the store."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

import trellis as tl
from trellis.cli.run_meta import RunMeta, redact_model_overrides
from trellis.config import ModelBinding
from trellis.engine.lease import owner_is_dead
from trellis.models import registry
from trellis.models.base import Model
from trellis.models.sim import SimModel, SimOptions
from trellis.redact import is_secret_option, redact_options
from trellis.store import SQLiteStore

from .helpers import FLOWS, assert_one_error_line, calls_in, invoke, read_jsonl, sim, write_items

CHAIN = f"{FLOWS / 'chain.py'}:flow"
DB = ".trellis/trellis.db"


def editable_copy(tmp_path: Path) -> str:
    """A copy of flows/editable.py that a test may edit between runs."""
    path = tmp_path / "editable_flow.py"
    shutil.copy(FLOWS / "editable.py", path)
    return f"{path}:flow"


def edit(target: str, old: str, new: str) -> None:
    path = Path(target.rpartition(":")[0])
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# -- --run-id: a completed run is returned as recorded ------------------------------------


def test_same_run_id_twice_returns_the_recorded_result(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    args = ["run", CHAIN, "--input", '{"item": "pears"}', "--run-id", "r1", *sim(log), "--json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.stderr
    assert calls_in(log) == 2
    assert (tmp_path / DB).is_file()  # recorded by default, in the working directory

    second = invoke(*args)
    assert second.exit_code == 0, second.stderr
    assert calls_in(log) == 2  # nothing ran
    assert "run r1 already completed" in second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert b["run_id"] == "r1" and b["status"] == "done"
    assert b["outputs"] == a["outputs"]
    assert b["usage"] == a["usage"]
    assert [c["outcome"] for c in b["calls"]] == ["ok", "ok"]

    table = invoke("run", CHAIN, "--run-id", "r1", *sim(log))  # --input may be left out
    assert table.exit_code == 0, table.stderr
    assert "run r1" in table.stdout and "publish" in table.stdout
    assert calls_in(log) == 2


def test_trellis_store_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRELLIS_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    log = tmp_path / "calls.log"
    result = invoke("run", CHAIN, "--input", '{"item": "x"}', "--run-id", "e1", *sim(log))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "env.db").is_file()
    assert not (tmp_path / ".trellis").exists()
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [r["run_id"] for r in listed["runs"]] == ["e1"]


def test_no_store_records_nothing(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    result = invoke("run", CHAIN, "--input", '{"item": "x"}', "--no-store", *sim(log))
    assert result.exit_code == 0, result.stderr
    assert calls_in(log) == 2
    assert not (tmp_path / ".trellis").exists()
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}, {"item": "b"}])
    batch = invoke("run", CHAIN, "-f", str(items), "--no-store", *sim(log), "--json")
    assert batch.exit_code == 0, batch.stderr
    assert "batch_id" not in json.loads(batch.stdout)
    assert not (tmp_path / ".trellis").exists()

    assert_one_error_line(
        invoke("run", CHAIN, "--input", "{}", "--no-store", "--run-id", "x"),
        "--run-id needs a store",
    )
    assert_one_error_line(
        invoke("run", CHAIN, "--input", "{}", "--no-store", "--store", "memory:"),
        "either --store or --no-store",
    )


def test_memory_store_lives_in_the_process_only(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    args = ["run", CHAIN, "--input", '{"item": "x"}', "--store", "memory:", "--run-id", "m1"]
    assert invoke(*args, *sim(log)).exit_code == 0
    assert invoke(*args, *sim(log)).exit_code == 0
    assert calls_in(log) == 4  # a new process (invocation) has an empty store
    assert not (tmp_path / ".trellis").exists()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://db/trellis", "unknown store URL 'mysql://db/trellis'"),
        ("postgresql://u:pw@127.0.0.1:1/trellis", "store postgresql://u@127.0.0.1:1/trellis"),
        ("sqlite:///x.db?mode=fast", "unknown option(s) ['mode']"),
        ("sqlite://", "names no file"),
        ("foreign.db", "not a Trellis store"),
    ],
)
def test_bad_store_is_one_error_line(tmp_path: Path, url: str, fragment: str) -> None:
    import sqlite3

    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE notes (x TEXT)")
    foreign.commit()
    foreign.close()
    log = tmp_path / "calls.log"
    result = invoke("run", CHAIN, "--input", '{"item": "x"}', "--store", url, *sim(log))
    assert_one_error_line(result, fragment)
    assert calls_in(log) == 0
    for args in (["runs"], ["show", "x"], ["resume", "x"], ["cache", "stats"]):
        assert_one_error_line(invoke(*args, "--store", url), fragment)


def test_store_folder_that_cannot_be_created_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    result = invoke("run", CHAIN, "--input", '{"item": "x"}', "--store", "blocker/t.db")
    assert_one_error_line(result, "cannot open the store 'blocker/t.db'")


def test_newer_schema_is_one_error_line(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "new.db").close()
    import sqlite3

    db = sqlite3.connect(tmp_path / "new.db")
    db.execute("UPDATE trellis_meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    result = invoke("run", CHAIN, "--input", '{"item": "x"}', "--store", "new.db")
    assert_one_error_line(result, "written by a newer Trellis")
    assert_one_error_line(invoke("runs", "--store", "new.db"), "newer Trellis")


def test_run_id_of_a_run_with_other_inputs_or_of_a_batch(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    assert invoke("run", CHAIN, "-i", '{"item": "a"}', "--run-id", "r", *sim(log)).exit_code == 0
    target = editable_copy(tmp_path)
    assert_one_error_line(
        invoke("run", target, "-i", '{"text": "a"}', "--run-id", "r", *sim(log)),
        "belongs to flow 'chain'",
    )
    Path("fail-second").touch()
    assert invoke("run", target, "-i", '{"text": "a"}', "--run-id", "f", *sim(log)).exit_code == 1
    assert_one_error_line(
        invoke("run", target, "-i", '{"text": "b"}', "--run-id", "f", *sim(log)),
        "run 'f' was started with other inputs",
    )
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}])
    assert invoke("run", CHAIN, "-f", str(items), "--run-id", "b", *sim(log)).exit_code == 0
    assert_one_error_line(
        invoke("run", CHAIN, "-i", '{"item": "a"}', "--run-id", "b", *sim(log)),
        "run b is a batch",
        "trellis resume b",
    )
    other = write_items(tmp_path / "other.jsonl", [{"item": "a"}, {"item": "b"}])
    assert_one_error_line(
        invoke("run", CHAIN, "-f", str(other), "--run-id", "b", *sim(log)),
        "recorded with 1 items, the input file has 2",
    )
    assert_one_error_line(
        invoke("run", CHAIN, "-f", str(items), "--run-id", "r", *sim(log)),
        "run r is a single run, not a batch",
    )


# -- incomplete runs resume; changed steps are detected -------------------------------------


def test_failed_run_resumes_replaying_its_completed_steps(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    Path("fail-second").touch()
    failed = invoke("run", target, "--input", '{"text": "resume me"}', "--run-id", "f1", *sim(log))
    assert failed.exit_code == 1
    assert calls_in(log) == 1
    Path("fail-second").unlink()

    resumed = invoke("run", target, "--run-id", "f1", *sim(log), "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming run f1 (1 step(s) done before)" in resumed.stderr
    assert calls_in(log) == 1  # 'first' was replayed from the store, not called again
    data = json.loads(resumed.stdout)
    assert data["status"] == "done"
    assert data["outputs"]["second"] == len(data["outputs"]["first"])


def test_resume_command_of_a_failed_single_run(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    Path("fail-second").touch()
    assert invoke("run", target, "-i", '{"text": "t"}', "--run-id", "s1", *sim(log)).exit_code == 1
    Path("fail-second").unlink()
    resumed = invoke("resume", "s1")
    assert resumed.exit_code == 0, resumed.stderr
    assert "second" in resumed.stdout and "done" in resumed.stdout
    assert calls_in(log) == 1  # the recorded binding (with its call_log) was used again
    assert_one_error_line(invoke("resume", "s1", "--output", "x.jsonl"), "--output is for batches")
    again = invoke("resume", "s1")  # completed: its recorded result
    assert again.exit_code == 0 and "already completed" in again.stderr


def test_changed_step_is_detected_and_rerun_changed_reruns_it(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    args = ["run", target, "--input", '{"text": "change me"}', "--run-id", "c1", *sim(log)]
    Path("fail-second").touch()
    assert invoke(*args).exit_code == 1
    assert calls_in(log) == 1
    Path("fail-second").unlink()
    edit(target, 'f"Summarise: {text}"', 'f"Summarise in one short sentence: {text}"')

    line = assert_one_error_line(invoke(*args), "step 'first' changed", "--rerun-changed")
    assert "c1" in line
    assert calls_in(log) == 1
    assert_one_error_line(invoke("resume", "c1"), "step 'first' changed")

    rerun = invoke(*args, "--rerun-changed", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert calls_in(log) == 2  # 'first' ran again with the new prompt
    data = json.loads(rerun.stdout)
    assert data["status"] == "done"
    assert data["calls"][-1]["source"] == "live"


# -- batches ---------------------------------------------------------------------------------


def test_batch_records_items_and_resume_runs_only_unfinished_ones(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    items = write_items(tmp_path / "items.jsonl", [{"text": f"item {i}"} for i in range(5)])
    out = tmp_path / "out.jsonl"
    Path("fail-second").touch()
    first = invoke("run", target, "-f", str(items), "-o", str(out), "--run-id", "b1", *sim(log))
    assert first.exit_code == 1
    assert "batch b1: 5 items recorded" in first.stderr and "trellis resume b1" in first.stderr
    assert [line["status"] for line in read_jsonl(out)] == ["failed"] * 5
    assert calls_in(log) == 5
    Path("fail-second").unlink()
    out.unlink()

    resumed = invoke("resume", "b1", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming batch b1: 0 of 5 items were done before" in resumed.stderr
    assert json.loads(resumed.stdout)["batch_id"] == "b1"
    assert calls_in(log) == 5  # every 'first' was replayed
    lines = read_jsonl(out)  # the recorded --output
    assert [(x["index"], x["run_id"], x["status"]) for x in lines] == [
        (i, f"b1.{i}", "done") for i in range(5)
    ]
    assert [x["inputs"]["text"] for x in lines] == [f"item {i}" for i in range(5)]

    elsewhere = tmp_path / "again.jsonl"
    again = invoke("run", target, "-f", str(items), "--run-id", "b1", "-o", str(elsewhere), "-q")
    assert again.exit_code == 0, again.stderr
    assert "batch b1 already completed" in again.stderr
    recorded = read_jsonl(elsewhere)
    for line in (*recorded, *lines):
        del line["duration_s"]
    assert recorded == lines
    assert calls_in(log) == 5

    to_stdout = invoke("resume", "b1", "--output", "-", "-q")
    assert to_stdout.exit_code == 0
    assert [json.loads(x)["index"] for x in to_stdout.stdout.splitlines()[:5]] == list(range(5))


def test_same_batch_id_with_one_item_changed_names_that_item(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    items = write_items(Path("items.jsonl"), [{"item": "a"}, {"item": "b"}, {"item": "c"}])
    args = ["run", CHAIN, "--input-file", str(items), "--run-id", "b1", *sim(log)]
    first = invoke(*args)
    assert first.exit_code == 0, first.stderr
    assert calls_in(log) == 6

    write_items(items, [{"item": "a"}, {"item": "B"}, {"item": "c"}])  # same count
    assert_one_error_line(
        invoke(*args),
        "items.jsonl:2: batch 'b1' was recorded with other inputs for this item",
        "trellis resume b1",
    )
    assert calls_in(log) == 6
    with SQLiteStore(tmp_path / DB) as store:
        recorded = [json.loads(c.inputs) for c in store.list_runs(parent_id="b1")]
    assert recorded == [{"item": "a"}, {"item": "b"}, {"item": "c"}]

    write_items(items, [{"item": "a"}, {"item": "b"}, {"item": "c"}])
    again = invoke(*args)
    assert again.exit_code == 0, again.stderr
    assert "batch b1 already completed" in again.stderr
    assert calls_in(log) == 6


def test_generated_batch_id_is_printed(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}, {"item": "b"}])
    result = invoke("run", CHAIN, "-f", str(items), *sim(log), "--json")
    assert result.exit_code == 0, result.stderr
    batch_id = json.loads(result.stdout)["batch_id"]
    assert f"batch {batch_id}: 2 items recorded" in result.stderr
    runs = json.loads(invoke("runs", "--json").stdout)["runs"]
    assert [(r["run_id"], r["kind"], r["items"]["done"]) for r in runs] == [(batch_id, "batch", 2)]


# -- leases ----------------------------------------------------------------------------------


def _failed_run(tmp_path: Path, run_id: str) -> Path:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    Path("fail-second").touch()
    assert (
        invoke("run", target, "-i", '{"text": "t"}', "--run-id", run_id, *sim(log)).exit_code == 1
    )
    Path("fail-second").unlink()
    return log


def test_run_leased_by_a_live_process_is_refused(tmp_path: Path) -> None:
    log = _failed_run(tmp_path, "l1")
    with SQLiteStore(tmp_path / DB) as store:
        me = f"{socket.gethostname()}:{os.getpid()}:test"
        assert store.acquire_lease("l1", me, time.time(), 60) is None
    assert_one_error_line(invoke("resume", "l1"), "run l1 is being executed by", "try again later")
    with SQLiteStore(tmp_path / DB) as store:
        store.release_lease("l1", me)
        assert store.acquire_lease("l1", "elsewhere:1:x", time.time(), 60) is None
    assert_one_error_line(invoke("resume", "l1"), "elsewhere:1:x", "another host")
    assert calls_in(log) == 1


def test_batch_being_resumed_elsewhere_is_refused(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    log = tmp_path / "calls.log"
    items = write_items(tmp_path / "items.jsonl", [{"text": "a"}, {"text": "b"}])
    Path("fail-second").touch()
    assert invoke("run", target, "-f", str(items), "--run-id", "bl", *sim(log)).exit_code == 1
    Path("fail-second").unlink()
    with SQLiteStore(tmp_path / DB) as store:  # a live process holds the batch
        me = f"{socket.gethostname()}:{os.getpid()}:other"
        assert store.acquire_lease("bl", me, time.time(), 60) is None
    assert_one_error_line(invoke("resume", "bl"), "run bl is being executed by", me)
    assert_one_error_line(
        invoke("run", target, "-f", str(items), "--run-id", "bl"), "being executed by"
    )
    with SQLiteStore(tmp_path / DB) as store:
        store.release_lease("bl", me)
    assert invoke("resume", "bl").exit_code == 0
    assert calls_in(log) == 2


def test_lease_of_a_dead_process_is_waited_out(tmp_path: Path) -> None:
    _failed_run(tmp_path, "d1")
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = f"{socket.gethostname()}:{child.stdout.strip()}:gone"
    assert owner_is_dead(dead) is True
    assert owner_is_dead(f"{socket.gethostname()}:{os.getpid()}:me") is False
    assert owner_is_dead("another-host:1:x") is None
    with SQLiteStore(tmp_path / DB) as store:
        assert store.acquire_lease("d1", dead, time.time(), 0.6) is None
    started = time.monotonic()
    resumed = invoke("resume", "d1")
    assert resumed.exit_code == 0, resumed.stderr
    assert "waiting" in resumed.stderr and "to expire" in resumed.stderr
    assert time.monotonic() - started >= 0.3


def test_lease_ttl_must_be_positive() -> None:
    assert_one_error_line(
        invoke("run", CHAIN, "--input", '{"item": "x"}', "--lease-ttl", "0"), "--lease-ttl"
    )


# -- resume: errors --------------------------------------------------------------------------


def test_resume_unknown_run_is_one_error_line(tmp_path: Path) -> None:
    assert_one_error_line(
        invoke("resume", "nope"), "no run 'nope' in sqlite:///.trellis/trellis.db"
    )
    assert not (tmp_path / ".trellis").exists()  # reading never creates a store
    log = tmp_path / "calls.log"
    assert invoke("run", CHAIN, "-i", '{"item": "x"}', *sim(log)).exit_code == 0
    assert_one_error_line(invoke("resume", "nope"), "no run 'nope' in")


def test_resume_of_a_run_not_started_by_the_cli(tmp_path: Path) -> None:
    flow = tl.Flow("api", inputs={"x": int})

    @flow.step
    def double(x: int) -> int:
        return 2 * x

    async def record() -> None:
        async with tl.Engine(store=store) as engine:
            await engine.run(flow, {"x": 2}, run_id="api1")

    with SQLiteStore(tmp_path / DB) as store:
        asyncio.run(record())
    assert_one_error_line(invoke("resume", "api1"), "not started with `trellis run`")


def test_resume_reports_a_moved_flow_file(tmp_path: Path) -> None:
    target = editable_copy(tmp_path)
    _failed_run(tmp_path, "mv1")
    Path(target.rpartition(":")[0]).unlink()
    assert_one_error_line(invoke("resume", "mv1"), "editable_flow.py does not exist")


# -- the response cache ----------------------------------------------------------------------


def test_cache_across_invocations_costs_nothing(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    args = ["run", CHAIN, "--input", '{"item": "cached"}', *sim(log), "--cache", "--json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.stderr
    assert calls_in(log) == 2
    second = invoke(*args)
    assert second.exit_code == 0, second.stderr
    assert calls_in(log) == 2  # every reply came from the cache
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["run_id"] != b["run_id"]
    assert [c["source"] for c in b["calls"]] == ["cache", "cache"]
    assert b["usage"]["cost_usd"] == 0.0
    assert b["outputs"] == a["outputs"]

    shown = invoke("show", b["run_id"], "--json")
    assert [c["source"] for c in json.loads(shown.stdout)["calls"]] == ["cache", "cache"]
    assert "2 replies from the cache (no cost)" not in invoke("show", b["run_id"]).stdout
    assert "1 reply from the cache (no cost)" in invoke("show", b["run_id"]).stdout

    no_cache = invoke(*args[:-2], "--json")
    assert no_cache.exit_code == 0 and calls_in(log) == 4  # without --cache: live calls

    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert stats["entries"] == 2 and stats["hits"] == 2 and stats["expired"] == 0
    assert stats["bytes"] > 0 and stats["store"] == "sqlite:///.trellis/trellis.db"
    assert "2 cached replies" in invoke("cache", "stats").stdout
    assert invoke("cache", "clear", "--expired").stdout.startswith("removed 0 expired")
    cleared = invoke("cache", "clear")
    assert cleared.exit_code == 0 and cleared.stdout.startswith("removed 2 cache entries")
    assert json.loads(invoke("cache", "stats", "--json").stdout)["entries"] == 0


def test_cache_ttl_expires_entries(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    args = ["run", CHAIN, "--input", '{"item": "ttl"}', *sim(log), "--cache-ttl", "0.2"]
    assert invoke(*args).exit_code == 0
    time.sleep(0.3)
    assert json.loads(invoke("cache", "stats", "--json").stdout)["expired"] == 2
    assert invoke(*args).exit_code == 0
    assert calls_in(log) == 4  # expired entries are not used (they were replaced)
    time.sleep(0.3)
    assert invoke("cache", "clear", "--expired").stdout.startswith("removed 2 expired")
    assert json.loads(invoke("cache", "stats", "--json").stdout)["entries"] == 0
    assert_one_error_line(invoke(*args, "--cache-ttl", "-1"), "--cache-ttl must be positive")


def test_cache_commands_without_a_store(tmp_path: Path) -> None:
    assert invoke("cache", "stats").stdout.startswith("sqlite:///.trellis/trellis.db: 0 cached")
    assert invoke("cache", "clear").stdout.startswith("removed 0 cache entries")
    assert not (tmp_path / ".trellis").exists()


# -- secrets never reach the store -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("api_key", "abc", True),
        ("apiKey", "abc", True),
        ("X-Api-Key", "abc", True),
        ("auth_token", "abc", True),
        ("token", "abc", True),
        ("client_secret", "abc", True),
        ("password", "abc", True),
        ("Authorization", "Bearer x", True),
        ("header", "Bearer abc", True),
        ("anything", "sk-live-123", True),
        ("api_key_env", "MY_KEY_VAR", False),
        ("max_tokens", "100", False),
        ("output_tokens_per_second", "50", False),
        ("latency_ms", "50-100", False),
        ("call_log", "/tmp/x.log", False),
    ],
)
def test_is_secret_option(name: str, value: str, secret: bool) -> None:
    assert is_secret_option(name, value) is secret


def test_redaction_of_options_and_overrides() -> None:
    kept, dropped = redact_options(
        {
            "api_key": "sk-1",
            "base_url": "https://user:pw@example.com:8443/v1",
            "latency_ms": "5",
            "api_key_env": "KEY_VAR",
        }
    )
    assert kept == {
        "base_url": "https://example.com:8443/v1",
        "latency_ms": "5",
        "api_key_env": "KEY_VAR",
    }
    assert dropped == ["api_key", "base_url"]
    safe, redacted = redact_model_overrides(
        ["small=sim:small?latency_ms=1-2&api_key=sk-secret-1&token=t0k", "large=sim:large"]
    )
    assert safe == ["small=sim:small?latency_ms=1-2", "large=sim:large"]
    assert redacted == ["small.api_key", "small.token"]
    assert ModelBinding.parse(safe[0].partition("=")[2]).options == {"latency_ms": "1-2"}


def _keyed(binding: ModelBinding) -> Model:
    """A provider that takes an API key (and ignores it): the simulator behind it."""
    options = {k: v for k, v in binding.options.items() if k not in ("api_key", "auth_token")}
    return SimModel(binding.model, SimOptions.parse(options))


def test_keys_never_reach_the_store_or_the_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry, "BUILTIN_PROVIDERS", {**registry.BUILTIN_PROVIDERS, "keyed": _keyed}
    )
    log = tmp_path / "calls.log"
    secret, token = "sk-secret-4f9a7c", "tok-82d1e0"
    binding = f"small=keyed:small?api_key={secret}&auth_token={token}&call_log={log}"
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}, {"item": "b"}])
    single = invoke("run", CHAIN, "-i", '{"item": "x"}', "-m", binding, "--run-id", "k1", "--json")
    batch = invoke("run", CHAIN, "-f", str(items), "-m", binding, "--run-id", "k2", "--json")
    assert single.exit_code == 0 and batch.exit_code == 0, single.stderr + batch.stderr
    outputs = [
        single.stdout,
        batch.stdout,
        invoke("runs", "--all", "--json").stdout,
        invoke("runs", "--all").stdout,
        invoke("show", "k1", "--json").stdout,
        invoke("show", "k1").stdout,
        invoke("show", "k2", "--json").stdout,
    ]
    store_bytes = b"".join(p.read_bytes() for p in (tmp_path / ".trellis").iterdir())
    for text in outputs:
        assert secret not in text and token not in text
    assert secret.encode() not in store_bytes and token.encode() not in store_bytes
    with SQLiteStore(tmp_path / DB) as store:
        for run_id in ("k1", "k2"):
            row = store.get_run(run_id)
            assert row is not None and row.meta is not None
            meta = RunMeta.from_dict(json.loads(row.meta))
            assert meta.models == [f"small=keyed:small?{urlencode({'call_log': str(log)})}"]
            assert meta.redacted == ["small.api_key", "small.auth_token"]

    resumed = invoke("resume", "k1")
    assert resumed.exit_code == 0, resumed.stderr
    assert "small.api_key, small.auth_token were not recorded" in resumed.stderr


# -- help ------------------------------------------------------------------------------------


def test_help_texts_name_the_durable_options() -> None:
    run_help = invoke("run", "--help").stdout
    for option in (
        "--store",
        "--no-store",
        "--run-id",
        "--rerun-changed",
        "--cache",
        "--lease-ttl",
    ):
        assert option in run_help
    top = invoke("--help").stdout
    for command in ("resume", "runs", "show", "cache"):
        assert command in top
    assert "--rerun-changed" in invoke("resume", "--help").stdout
    assert "--status" in invoke("runs", "--help").stdout
    assert "--json" in invoke("show", "--help").stdout
    assert "--expired" in invoke("cache", "clear", "--help").stdout
