"""The web UI over HTTP (Starlette's test client): every page and its JSON API, the
token rules, and answering a waiting step through ``trellis approve`` / ``reply``'s path."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from markupsafe import escape as html_escape
from starlette.testclient import TestClient
from tests.ui.conftest import TOKEN, settings_for

import trellis as tl
from trellis.cli.stores import open_existing_store
from trellis.ui import create_app
from trellis.ui.app import _environment

Sample = tuple[Path, dict[str, str]]


def _status(store: Path, run_id: str) -> str:
    opened = open_existing_store(str(store))
    assert opened is not None
    try:
        row = opened.get_run(run_id)
        assert row is not None
        return row.status
    finally:
        opened.close()


# -- pages and their API ----------------------------------------------------------------


def test_runs_page_lists_every_top_level_run(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    data = client.get("/api/runs").json()
    assert len(data["runs"]) == 6 and data["more"] is False
    assert {r["run_id"] for r in data["runs"]} == set(ids.values())
    html = client.get("/").text
    for run_id in ids.values():
        assert f'href="/runs/{run_id}"' in html
    assert "batch · 6 items" in html


def test_runs_are_filtered_by_status_and_flow_and_sorted(
    client: TestClient, sample: Sample
) -> None:
    _, ids = sample
    failed = client.get("/api/runs?status=failed").json()
    assert [r["run_id"] for r in failed["runs"]] == [ids["failed"]]
    cascade = client.get("/api/runs?flow=moderation-cascade").json()
    assert {r["run_id"] for r in cascade["runs"]} == {ids["cascade"], ids["cascade_llm"]}
    by_flow = client.get("/api/runs?sort=flow&order=asc").json()["runs"]
    assert [r["flow"] for r in by_flow] == sorted(r["flow"] for r in by_flow)
    items = client.get(f"/api/runs?batch={ids['batch']}&status=done").json()
    assert [r["item_index"] for r in items["runs"]] == list(range(6))  # in item order
    future = client.get("/api/runs?since=2999-01-01").json()
    assert future["total"] == 0
    assert client.get("/api/runs?status=bogus").status_code == 400
    assert "not a time" in client.get("/api/runs?since=yesterday").json()["error"]


def test_runs_are_paginated(client: TestClient, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("trellis.ui.views.PAGE_SIZE", 2)
    first = client.get("/api/runs?page=1").json()
    third = client.get("/api/runs?page=3").json()
    assert (len(first["runs"]), first["more"], len(third["runs"]), third["more"]) == (
        2,
        True,
        2,
        False,
    )
    assert first["total"] is None  # newest first: only the page's rows are read
    ids = [r["run_id"] for p in (1, 2, 3) for r in client.get(f"/api/runs?page={p}").json()["runs"]]
    assert len(set(ids)) == 6
    sorted_pages = client.get("/api/runs?sort=flow&page=1").json()
    assert (sorted_pages["total"], sorted_pages["pages"]) == (6, 3)
    html = client.get("/?page=2").text
    assert "page 2" in html and "page=1" in html and "page=3" in html
    assert "older →" not in client.get("/?page=3").text


def test_run_page_draws_the_graph_with_statuses_and_the_skip_decision(
    client: TestClient, sample: Sample
) -> None:
    _, ids = sample
    html = client.get(f"/runs/{ids['cascade']}").text
    start = html.index("<svg xmlns")
    svg = html[start : html.index("</svg>", start)]
    nodes = dict(re.findall(r'href="#step-(\w+)" class="node (\w+)"', svg))
    assert nodes == {
        "quick_filter": "done",
        "classifier": "skipped",
        "llm_review": "skipped",
        "decision": "done",
    }
    assert 'class="edge taken"' in svg  # the route the run took
    api = client.get(f"/api/runs/{ids['cascade']}").json()
    assert "svg" not in api
    skipped = {s["name"]: s for s in api["steps"]}["classifier"]
    assert skipped["decisions"] and skipped["decisions"][0]["outcome"] == "skip"
    assert skipped["decisions"][0]["reason"] in svg  # the decision, on the node


def test_run_page_shows_attempts_waits_and_the_timeline(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    api = client.get(f"/api/runs/{ids['cascade_llm']}").json()
    review = {s["name"]: s for s in api["steps"]}["llm_review"]
    assert review["calls"] and review["usage"]["calls"] == 1
    rows = {r["step"]: r for r in api["timeline"]["rows"]}
    assert rows["llm_review"]["segments"]  # its attempts, inside its bar
    html = client.get(f"/runs/{ids['cascade_llm']}").text
    assert 'class="gantt"' in html and "LLM attempts" in html


def test_run_page_shows_each_attempts_prompt_and_reply(client: TestClient, sample: Sample) -> None:
    _, ids = sample  # the sample runs are recorded with --record-prompts
    api = client.get(f"/api/runs/{ids['cascade_llm']}").json()
    review = {s["name"]: s for s in api["steps"]}["llm_review"]
    call = next(c for c in review["calls"] if c["outcome"] == "ok")
    sent = call["prompt"][0]
    assert sent["role"] == "user" and "Consider context, idiom and sarcasm" in str(sent)
    reply = call["output"][0]
    assert reply["role"] == "assistant" and reply["finish_reason"] == "stop"
    text = reply["parts"][0]["content"]
    assert review["prompts_recorded"]
    html = client.get(f"/runs/{ids['cascade_llm']}").text
    detail = html[html.index('id="step-llm_review"') :]
    detail = detail[: detail.index('<details class="step"')]
    assert "Prompt and reply" in detail and "Consider context, idiom and sarcasm" in detail
    assert html_escape(text) in detail  # the reply, as the model sent it
    assert "Prompts were not recorded" not in html
    for failed in (c for c in review["calls"] if c["outcome"] != "ok"):  # a 429, say
        assert failed["prompt"] == call["prompt"] and "output" not in failed
        assert f"No reply: the attempt ended in {failed['outcome']}" in detail


def test_a_run_recorded_without_prompts_says_how_to_record_them(tmp_path: Path) -> None:
    store = tmp_path / "plain.db"
    flow = tl.Flow("plain", inputs={"text": str})

    @flow.step
    async def label(text: str, llm: tl.LLM) -> str:
        return await llm.generate(f"Label: {text}", model="small")

    async def record() -> str:
        async with tl.Engine(models={"small": "sim:small"}, store=f"sqlite:///{store}") as e:
            return (await e.run(flow, {"text": "hello"})).run_id

    run_id = asyncio.run(record())
    with TestClient(create_app(settings_for(store)), base_url="http://127.0.0.1") as client:
        api = client.get(f"/api/runs/{run_id}").json()
        step = {s["name"]: s for s in api["steps"]}["label"]
        assert step["calls"] and "prompt" not in step["calls"][0]
        assert not step["prompts_recorded"]
        html = client.get(f"/runs/{run_id}").text
    assert "Prompts were not recorded for this run" in html and "--record-prompts" in html
    assert "Prompt and reply" not in html


def test_each_step_shows_what_it_was_given(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    api = client.get(f"/api/runs/{ids['cascade_llm']}").json()
    steps = {s["name"]: s for s in api["steps"]}
    review = steps["llm_review"]
    assert review["inputs"] == {
        "text": api["inputs"]["text"],
        "classifier": api["outputs"]["classifier"],
    }
    assert set(steps["decision"]["inputs"]) == {"quick_filter", "classifier", "llm_review"}
    html = client.get(f"/runs/{ids['cascade_llm']}").text
    detail = html[html.index('id="step-llm_review"') :]
    assert '<div class="k">Inputs</div>' in detail[: detail.index('<details class="step"')]


def test_a_run_recorded_from_python_has_its_real_graph(tmp_path: Path) -> None:
    """Engine.run records the flow's graph itself: the UI draws the fan-in, not a chain."""
    store = tmp_path / "graph.db"
    flow = tl.Flow("fan-in", inputs={"text": str})

    @flow.step
    def words(text: str) -> int:
        return len(text.split())

    @flow.step
    def chars(text: str) -> int:
        return len(text)

    @flow.step
    def ratio(words: int, chars: int) -> float:
        return chars / words

    async def record() -> str:
        async with tl.Engine(store=f"sqlite:///{store}") as e:
            return (await e.run(flow, {"text": "two words"})).run_id

    run_id = asyncio.run(record())
    with TestClient(create_app(settings_for(store)), base_url="http://127.0.0.1") as client:
        api = client.get(f"/api/runs/{run_id}").json()
    assert api["edges"] == {"words": [], "chars": [], "ratio": ["words", "chars"]}
    steps = {s["name"]: s for s in api["steps"]}
    assert steps["words"]["inputs"] == {"text": "two words"}
    assert steps["ratio"]["inputs"] == {"words": 2, "chars": 9}


def test_failed_run_shows_the_error(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    api = client.get(f"/api/runs/{ids['failed']}").json()
    assert api["error"]["step"] == "parse_total"
    html = client.get(f"/runs/{ids['failed']}").text
    assert "could not convert string to float" in html
    assert 'class="node failed"' in html and 'class="node cancelled"' in html


def test_an_error_with_a_traceback_shows_the_user_frames() -> None:
    template = _environment().from_string(
        '{% from "_macros.html" import error_box %}{{ error_box(e) }}'
    )
    frame = {"file": "flows/mine.py", "line": 42, "function": "parse", "source": "float(x)"}
    html = template.render(e={"type": "ValueError", "message": "bad", "traceback": [frame]})
    assert "Traceback (your code)" in html
    assert "flows/mine.py" in html and ">42<" in html and "float(x)" in html
    plain = template.render(e={"type": "ValueError", "message": "bad"})
    assert "Traceback" not in plain


def test_a_tool_transcript_shows_results_errors_and_the_tools_traceback() -> None:
    template = _environment().from_string(
        '{% from "_macros.html" import tool_turns %}{{ tool_turns(turns) }}'
    )
    frame = {"file": "flows/tools.py", "line": 7, "function": "lookup", "source": "db[key]"}
    turns = [
        {"agent": 1, "turn": 1, "index": None, "round": None, "reply": "Looking it up",
         "input_tokens": 30, "output_tokens": 5, "cost_usd": 0.0001,
         "tool_calls": [
             {"id": "c1", "name": "lookup", "arguments": '{"key": "a"}', "result": "42",
              "latency_s": 0.01, "source": "live"},
             {"id": "c2", "name": "lookup", "arguments": '{"key": "zz"}', "raised": True,
              "error": "error: tool 'lookup' raised KeyError: 'zz'", "traceback": [frame],
              "latency_s": 0.01, "source": "journal"},
         ]},
    ]  # fmt: skip
    html = template.render(turns=turns)
    assert "agent 1 · turn 1" in html and "Looking it up" in html
    assert "<code>lookup</code>" in html and "42" in html
    assert "raised KeyError" in html and "replayed" in html
    assert "Traceback (your code)" in html and "flows/tools.py" in html and "db[key]" in html


def test_batch_page_lists_items_with_progress(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    api = client.get(f"/api/runs/{ids['batch']}").json()
    assert api["kind"] == "batch" and api["batch"]["total"] == 6
    html = client.get(f"/runs/{ids['batch']}").text
    assert html.count('class="run-link mono"') == 6
    assert "6 of 6 items finished" in html
    assert "hx-trigger" not in html  # done: no more polling
    routes = [item["route"] for item in api["batch"]["items"]]
    assert all(set(r) == {"skipped", "failed", "waiting"} for r in routes)
    for route in routes:
        if route["skipped"]:
            assert f"skipped {', '.join(route['skipped'])}" in html
    item = api["batch"]["items"][0]["run_id"]
    assert f'href="/runs/{ids["batch"]}"' in client.get(f"/runs/{item}").text  # back link


def test_a_running_batch_polls_its_progress(client: TestClient, sample: Sample) -> None:
    store, ids = sample
    opened = open_existing_store(str(store))
    assert opened is not None
    items = opened.list_runs(parent_id=ids["batch"])
    opened.update_run(ids["batch"], status="running")
    opened.update_run(items[-1].run_id, status="running")
    opened.close()
    html = client.get(f"/runs/{ids['batch']}").text
    assert f'hx-get="/runs/{ids["batch"]}/progress"' in html and 'hx-trigger="every 2s"' in html
    fragment = client.get(f"/runs/{ids['batch']}/progress").text
    assert fragment.lstrip().startswith('<div id="progress"')
    assert "5 of 6 items finished" in fragment and "1 running" in fragment


def test_compare_page_puts_two_runs_side_by_side(client: TestClient, sample: Sample) -> None:
    _, ids = sample
    data = client.get(f"/api/compare?a={ids['cascade']}&b={ids['cascade_llm']}").json()
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["llm_review"]["route_changed"] is True
    html = client.get(f"/compare?a={ids['cascade']}&b={ids['cascade_llm']}").text
    assert "they differ" in html and "llm_review" in html
    assert client.get("/compare").status_code == 200  # the empty form
    assert client.get("/api/compare").status_code == 400


def test_unknown_run_is_a_404_naming_it(client: TestClient) -> None:
    page = client.get("/runs/nope")
    assert page.status_code == 404 and "no run &#39;nope&#39;" in page.text
    assert client.get("/api/runs/nope").status_code == 404


def test_a_missing_store_shows_no_runs(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path / "absent.db"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/runs").json()["total"] == 0
        assert "No runs recorded" in c.get("/").text
    assert not (tmp_path / "absent.db").exists()  # reading never creates a store


def test_static_htmx_is_served_with_its_licence() -> None:
    path = Path(__file__).resolve().parents[2] / "src/trellis/ui/static/htmx.min.js"
    assert "Zero-Clause BSD" in path.read_text()[:400]


# -- answering waiting steps ------------------------------------------------------------


def test_approving_from_the_form_resumes_the_run(client: TestClient, sample: Sample) -> None:
    store, ids = sample
    run = ids["waiting"]
    page = client.get(f"/runs/{run}?token={TOKEN}").text
    assert f'name="token" value="{TOKEN}"' in page and ">Approve<" in page
    answered = client.post(
        f"/runs/{run}/steps/approval/answer",
        data={"token": TOKEN, "kind": "approve", "comment": "ok by me"},
    )
    assert answered.status_code == 200  # followed the redirect to the run page
    assert "step approval answered; the run is done now" in answered.text
    assert _status(store, run) == "done"


def test_an_answer_without_the_token_is_refused(client: TestClient, sample: Sample) -> None:
    store, ids = sample
    run = ids["waiting"]
    page = client.get(f"/runs/{run}").text
    assert TOKEN not in page and 'type="password"' in page  # asks for the token
    for form in ({"kind": "approve"}, {"kind": "approve", "token": "wrong"}):
        refused = client.post(f"/runs/{run}/steps/approval/answer", data=form)
        assert refused.status_code == 403
    api = client.post(f"/api/runs/{run}/steps/approval/answer", json={"answer": {}})
    assert api.status_code == 403
    # the cookie alone (a cross-site form would send it) is not enough either
    client.cookies.set("trellis_ui_token", TOKEN)
    assert (
        client.post(f"/runs/{run}/steps/approval/answer", data={"kind": "approve"}).status_code
        == 403
    )
    assert _status(store, run) == "waiting"


def test_a_wrong_answer_is_validated_like_trellis_reply(client: TestClient, sample: Sample) -> None:
    store, ids = sample
    run = ids["waiting"]
    headers = {"x-trellis-token": TOKEN}
    wrong = client.post(
        f"/api/runs/{run}/steps/approval/answer",
        json={"answer": {"approved": "maybe"}},
        headers=headers,
    )
    assert wrong.status_code == 400
    assert "approved" in wrong.json()["error"]
    bad_json = client.post(
        f"/runs/{run}/steps/approval/answer",
        data={"token": TOKEN, "kind": "reply", "answer": "{not json"},
    )
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
    not_waiting = client.post(
        f"/api/runs/{ids['failed']}/steps/parse_total/answer",
        json={"answer": 1},
        headers=headers,
    )
    assert not_waiting.status_code == 400 and "not waiting" in not_waiting.json()["error"]
    assert _status(store, run) == "waiting"
    ok = client.post(
        f"/api/runs/{run}/steps/approval/answer",
        json={"answer": {"approved": False, "comment": "not a sev1"}, "approval": True},
        headers=headers,
    )
    assert ok.json() == {"run_id": run, "step": "approval", "status": "done"}
    steps = {s["name"]: s for s in client.get(f"/api/runs/{run}").json()["steps"]}
    assert steps["create_ticket"]["status"] == "skipped"  # rejected: not created


# -- binding and hosts --------------------------------------------------------------------


def test_a_non_loopback_bind_needs_the_token_for_every_page(sample: Sample) -> None:
    store, ids = sample
    app = create_app(settings_for(store, host="0.0.0.0"))
    with TestClient(app, base_url="http://192.0.2.7") as c:
        assert c.get("/").status_code == 403
        assert c.get("/api/runs").status_code == 403
        assert c.get(f"/runs/{ids['failed']}").status_code == 403
        assert c.get("/?token=wrong").status_code == 403
        first = c.get(f"/?token={TOKEN}")
        assert first.status_code == 200
        assert "trellis_ui_token" in first.headers["set-cookie"]
        assert "HttpOnly" in first.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 200  # the cookie, from now on


def test_a_loopback_bind_refuses_foreign_host_headers(sample: Sample) -> None:
    app = create_app(settings_for(sample[0]))
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"host": "localhost:8765"}).status_code == 200
        assert c.get("/", headers={"host": "evil.example"}).status_code == 403  # rebinding


def test_a_partly_unpriced_cost_reads_as_everywhere_else(tmp_path: Path) -> None:
    """One priced model and one without a price: '≥ $x (1 call unpriced)', as trellis
    show and the batch summary say it, never a bare dash or $0."""
    store = tmp_path / "cost.db"
    flow = tl.Flow("mixed", inputs={"text": str})

    @flow.step
    async def priced(text: str, llm: tl.LLM) -> str:
        return await llm.generate(f"Say: {text}", model="small")

    @flow.step
    async def unpriced(priced: str, llm: tl.LLM) -> str:
        return await llm.generate(f"Again: {priced}", model="mine")

    models = {"small": "sim:small", "mine": tl.FunctionModel(lambda r: "ok", name="fn:mine")}

    async def record() -> str:
        async with tl.Engine(models=models, store=f"sqlite:///{store}") as e:
            return (await e.run(flow, {"text": "hi"})).run_id

    run_id = asyncio.run(record())
    with TestClient(create_app(settings_for(store)), base_url="http://127.0.0.1") as client:
        entry = client.get("/api/runs").json()["runs"][0]
        assert entry["cost_usd"] is None and entry["unpriced_attempts"] == 1
        assert entry["cost_usd_known_part"] > 0
        listing = client.get("/").text
        page = client.get(f"/runs/{run_id}").text
    for html in (listing, page):
        assert re.search(r"≥ \$0\.0\d+ \(1 call unpriced\)", html), html
    assert "unknown" in page  # the unpriced attempt's own cost
