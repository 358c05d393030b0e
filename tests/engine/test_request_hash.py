"""The journal's request digest is the one earlier versions wrote: a journal recorded before
an upgrade must still replay after it. ``reference_hash`` is the digest as it was first
written (one ``json.dumps`` of the settings per request); ``request_hash`` remembers the
pieces it has seen, and must give the same digest for every request, first seen or not."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.engine.journal import request_hash
from trellis.models.base import ModelRequest
from trellis.types import Message, ToolSpec


def reference_hash(model: str, request: ModelRequest) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(model.encode())
    for m in request.messages:
        h.update(f"\x1e{m.role}\x1f{m.content}\x1f{m.tool_call_id}".encode())
        for tc in m.tool_calls:
            h.update(f"\x1d{tc.id}\x1f{tc.name}\x1f{tc.arguments}".encode())
    h.update(
        json.dumps(
            [
                request.output_schema,
                request.temperature,
                request.max_tokens,
                request.seed,
                [(t.name, t.description, t.parameters) for t in request.tools],
                request.tool_choice,
            ],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
schemas = st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4)
numbers = st.none() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.booleans()
tools = st.lists(
    st.builds(
        ToolSpec,
        st.text(max_size=5),
        st.text(max_size=5),
        st.dictionaries(st.text(), json_values, max_size=2),
    ),
    max_size=2,
).map(tuple)


def _request(
    schema: Any, temperature: Any, max_tokens: Any, seed: Any, tool_list: Any, choice: Any
) -> ModelRequest:
    return ModelRequest(
        messages=(Message("user", "hi"),),
        model="m",
        output_schema=schema,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        tools=tool_list,
        tool_choice=choice,
    )


@settings(max_examples=300, deadline=None)
@given(
    schema=schemas,
    temperature=numbers,
    max_tokens=numbers,
    seed=numbers,
    tool_list=tools,
    choice=st.none() | st.text(max_size=4),
)
def test_the_digest_is_the_one_earlier_versions_recorded(
    schema: Any, temperature: Any, max_tokens: Any, seed: Any, tool_list: Any, choice: Any
) -> None:
    request = _request(schema, temperature, max_tokens, seed, tool_list, choice)
    expected = reference_hash("sim:small", request)
    assert request_hash("sim:small", request) == expected  # first seen
    assert request_hash("sim:small", request) == expected  # remembered


def test_equal_settings_of_other_types_keep_their_own_digests() -> None:
    """0, 0.0 and False are equal dict keys, but JSON writes them "0", "0.0", "false"."""
    schema = {"type": "object"}
    for first, second in ((0, 0.0), (0.0, 0), (1, True), (False, 0)):
        for value in (first, second, first):
            request = _request(schema, value, value, value, (), None)
            assert request_hash("m", request) == reference_hash("m", request)


def test_a_schema_equal_to_a_remembered_one_but_another_object_is_read_again() -> None:
    one = {"type": "object", "title": "A"}
    request_hash("m", _request(one, None, None, None, (), None))
    other = {"type": "object", "title": "B"}
    request = _request(other, None, None, None, (), None)
    assert request_hash("m", request) == reference_hash("m", request)


def test_settings_that_cannot_be_remembered_are_read_every_time() -> None:
    """A value that is not a number (against the declared types) cannot be a memo key:
    it is written out each time, as before, instead of failing."""
    for request in (
        _request(None, [0.5], None, None, (), None),
        _request({"type": "object"}, None, {"n": 1}, None, (), None),
    ):
        assert request_hash("m", request) == reference_hash("m", request)
