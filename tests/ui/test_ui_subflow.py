"""The web UI's waiting list and answer routes for questions inside a (mapped) sub-flow:
each is listed by its step path from the parent run and answered through
``/runs/RUN/steps/PATH/answer`` (the form) or ``/api/...`` (JSON), the path's ``/`` and
brackets included; the parent then finishes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient
from tests.cli.helpers import FLOWS, SIM, invoke
from tests.ui.conftest import TOKEN, settings_for

from trellis.ui import create_app


@pytest.fixture
def waiting_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with run ``f1`` of the sub-flow approval flow, waiting on two questions."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRELLIS_STORE", raising=False)
    monkeypatch.delenv("TRELLIS_TEST_COUNTER", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    db = tmp_path / "runs.db"
    inputs = json.dumps({"issues": ["login", "auto-typo", "billing"]})
    target = f"{FLOWS / 'subflow_approval.py'}:flow"
    started = invoke("run", target, "-i", inputs, "--run-id", "f1", "--store", str(db), *SIM)
    assert started.exit_code == 3, (started.stdout, started.stderr)
    return db


def test_questions_inside_a_subflow_are_listed_and_answered_by_path(waiting_store: Path) -> None:
    app = create_app(settings_for(waiting_store))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        data = client.get("/api/runs/f1").json()
        waiting = {w["step"]: w for w in data["waiting"]}
        assert list(waiting) == ["reviews[0]/approve", "reviews[2]/approve"]
        assert waiting["reviews[0]/approve"]["prompt"] == "Publish the fix for 'login'?"
        assert waiting["reviews[0]/approve"]["approval"] is True
        page = client.get(f"/runs/f1?token={TOKEN}").text
        action = f"/runs/f1/steps/{quote('reviews[0]/approve')}/answer"
        assert f'action="{action}"' in page

        headers = {"x-trellis-token": TOKEN}
        api = f"/api/runs/f1/steps/{quote('reviews[2]/approve')}/answer"
        wrong = client.post(api, json={"answer": {"approved": "maybe"}}, headers=headers)
        assert wrong.status_code == 400 and "not a valid Approval" in wrong.json()["error"]
        ok = client.post(
            api, json={"answer": {"approved": True}, "approval": True}, headers=headers
        )
        assert ok.json() == {"run_id": "f1", "step": "reviews[2]/approve", "status": "waiting"}
        left = [w["step"] for w in client.get("/api/runs/f1").json()["waiting"]]
        assert left == ["reviews[0]/approve"]

        answered = client.post(action, data={"token": TOKEN, "kind": "reject", "comment": "no"})
        assert answered.status_code == 200  # followed the redirect to the parent's page
        assert "step reviews[0]/approve answered; the run is done now" in answered.text
        done = client.get("/api/runs/f1").json()
        assert done["run"]["status"] == "done" and done["waiting"] == []
        summary = "login: held; auto-typo: published; billing: published"
        assert done["outputs"]["summary"] == summary


def test_a_subflow_steps_child_runs_are_nested_collapsed_and_open_on_their_own_page(
    waiting_store: Path,
) -> None:
    app = create_app(settings_for(waiting_store))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        data = client.get("/api/runs/f1").json()
        [reviews] = [s for s in data["steps"] if s["name"] == "reviews"]
        children = [c["run_id"] for c in reviews["children"]]
        assert children == ["f1/reviews[0]", "f1/reviews[1]", "f1/reviews[2]"]
        assert [c["status"] for c in reviews["children"]] == ["waiting", "done", "waiting"]
        page = client.get(f"/runs/f1?token={TOKEN}").text
        assert '<details class="subflow">' in page  # collapsed: no "open" attribute
        assert "Sub-flow: 3 child runs" in page
        link = f"/runs/{quote('f1/reviews[1]')}"
        assert f'href="{link}"' in page
        # A child run's own page and JSON, its id's "/" included; it links back.
        child = client.get(f"{link}?token={TOKEN}")
        assert child.status_code == 200
        assert "sub-flow step reviews[1]" in child.text
        assert 'href="/runs/f1#step-reviews"' in child.text
        api = client.get(f"/api/runs/{quote('f1/reviews[1]')}").json()
        assert api["run"]["run_id"] == "f1/reviews[1]" and api["run"]["status"] == "done"
        assert api["subflow"] == {"parent": "f1", "step": "reviews"}
