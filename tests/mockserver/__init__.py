"""Tests of the mock server (``trellis mock-server``); shared helpers for its test modules."""

from __future__ import annotations

import json
from typing import Any

import httpx

USER = [{"role": "user", "content": "Summarise the quarterly report from Acme Corp"}]


#: What every Messages API client sends (the mock server, like the API, requires it).
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST ``body`` as JSON; a Messages API request gets ``anthropic-version`` unless
    ``headers`` set it (an empty value: sent without it)."""
    sent = dict(headers or {})
    if url.endswith("/v1/messages"):
        sent = {**ANTHROPIC_VERSION, **sent}
        sent = {k: v for k, v in sent.items() if v}
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=body, headers=sent)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """Server-sent events of a whole body as (event name or None, data) pairs."""
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        events.append((name, "\n".join(data)))
    return events


def openai_chunks(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an OpenAI stream body, and whether it ended with ``[DONE]``."""
    events = sse_events(text)
    done = bool(events) and events[-1][1] == "[DONE]"
    return [json.loads(d) for _, d in events if d != "[DONE]"], done


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for name, data in sse_events(text):
        assert name is not None, f"Anthropic events are always named: {data}"
        payload = json.loads(data)
        assert payload["type"] == name, "the data's type repeats the event name"
        out.append((name, payload))
    return out
