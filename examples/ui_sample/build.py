"""Build the UI's sample store: ``python examples/ui_sample/build.py STORE.db``.

Through the ``trellis`` command itself, so every run is recorded as users record them:

- a batch of feedback-triage items (``examples/feedback_triage.py``);
- a failed run (``invoices.py``: user code raises);
- a run waiting for an approval (``examples/approval.py``);
- routed moderation-cascade runs (``examples/moderation_cascade.py``), some decided by
  the first stage and some by the LLM.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from trellis.cli import app

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
CONFIG = HERE / "trellis.toml"

__all__ = ["build"]


def _trellis(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(CONFIG), "--json"])
    if result.exit_code not in (0, 1, 3):  # done, failed, waiting: all wanted here
        raise RuntimeError(f"trellis {' '.join(args)} exited {result.exit_code}: {result.output}")
    return result.stdout


def _run(*args: str) -> str:
    """``trellis run ...``, recording each attempt's prompt and reply (the UI shows them)."""
    return _trellis("run", *args, "--record-prompts")


def _one(target: str, inputs: dict[str, str], store: str) -> str:
    """Record one run of ``target`` on ``inputs``; its id."""
    out = _run(target, "--input", json.dumps(inputs), "--store", store)
    return str(json.loads(out)["run_id"])


def build(store: Path, *, items: int = 12) -> dict[str, str]:
    """Record the sample runs in ``store`` (a SQLite file); returns run ids by role:
    ``batch``, ``failed``, ``waiting``, ``cascade``, ``cascade_llm``, ``agent``."""
    url = str(store)
    ids: dict[str, str] = {}
    feedback = (EXAMPLES / "data" / "feedback.jsonl").read_text().splitlines()[:items]
    inputs = Path(tempfile.mkdtemp()) / "feedback.jsonl"
    inputs.write_text("\n".join(feedback) + "\n")
    _run(
        f"{EXAMPLES}/feedback_triage.py:flow",
        "--input-file",
        str(inputs),
        "--output",
        str(inputs.with_suffix(".out.jsonl")),
        "--store",
        url,
        "--quiet",
    )
    ids["batch"] = _last_run_id(url)
    text = "Invoice from Acme Corp, total due: twelve hundred dollars."
    ids["failed"] = _one(f"{HERE}/invoices.py:flow", {"invoice": text}, url)
    sso = "Our whole team has been locked out of SSO since 9am."
    ids["waiting"] = _one(f"{EXAMPLES}/approval.py:flow", {"feedback": sso}, url)
    for key, comment in (
        ("cascade", "CLICK HERE for FREE followers!!! http://spam.example"),
        (
            "cascade_llm",
            "This is the dumbest policy I have seen all year and whoever approved it "
            "should be embarrassed.",
        ),
    ):
        ids[key] = _one(f"{EXAMPLES}/moderation_cascade.py:flow", {"text": comment}, url)
    message = "From ana@example.com: we were billed twice this month, please refund one."
    ids["agent"] = _one(f"{HERE}/support_agent.py:flow", {"message": message}, url)
    return ids


def _last_run_id(url: str) -> str:
    result = CliRunner().invoke(app, ["runs", "--store", url, "--json"])
    return str(json.loads(result.stdout)["runs"][0]["run_id"])


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1])), indent=2))
