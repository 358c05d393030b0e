"""Secrets never leave the process: binding options are cleaned before they are recorded
(run metadata) or hashed (the response cache's model identity)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trellis.config import ModelBinding
from trellis.engine.services import _identity
from trellis.models.sim import SimModel
from trellis.providers._keys import redact_url
from trellis.redact import redact_options, redacted_url

SECRET = "s3cr3t-Value-42"


def test_a_key_in_a_url_query_is_removed_and_the_rest_of_the_url_kept() -> None:
    url = f"https://example.openai.azure.com/openai/deployments/d?api-version=2024-10-21&api-key={SECRET}"
    kept, redacted = redact_options({"base_url": url})
    assert SECRET not in str(kept)
    assert kept["base_url"] == (
        "https://example.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
    )
    assert redacted == ["base_url"]


def test_credentials_and_secret_query_parameters_both_go() -> None:
    url = f"http://user:{SECRET}@127.0.0.1:8000/v1?token={SECRET}&x=1"
    kept, _ = redact_options({"base_url": url})
    assert kept["base_url"] == "http://127.0.0.1:8000/v1?x=1"


def test_a_url_with_nothing_secret_is_recorded_unchanged() -> None:
    url = "http://127.0.0.1:8000/v1?api-version=1&max_tokens=5"
    assert redact_options({"base_url": url}) == ({"base_url": url}, [])


def test_the_cache_identity_of_a_model_never_holds_a_key_from_its_url() -> None:
    binding = ModelBinding.parse("sim:small", base_url=f"http://h/v1?key={SECRET}")
    other = ModelBinding.parse("sim:small", base_url="http://h/v1?key=another-secret")
    model = SimModel("sim:small")
    assert SECRET not in _identity(binding, model)
    assert _identity(binding, model) == _identity(other, model)  # keys do not split the cache


_names = st.sampled_from(["key", "api_key", "api-key", "apiKey", "token", "access_token", "sig"])


@given(name=_names, secret=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=8))
def test_no_secret_named_parameter_survives_in_any_url(name: str, secret: str) -> None:
    url = f"https://host.example/v1?model=x&{name}={secret}"
    kept, _ = redact_options({"base_url": url})
    assert f"{name}=" not in kept["base_url"] and "model=x" in kept["base_url"]
    # Messages (errors naming the endpoint) follow the same rule: before, ``sig`` (an
    # Azure shared-access signature) was hidden from messages but kept in run metadata.
    shown = redact_url(url)
    assert secret not in shown and f"{name}=[REDACTED]" in shown and "model=x" in shown


def test_an_azure_functions_code_in_a_url_query_is_a_key() -> None:
    url = f"https://fn.azurewebsites.net/api/chat?code={SECRET}&x=1"
    kept, redacted = redact_options({"base_url": url})
    assert kept["base_url"] == "https://fn.azurewebsites.net/api/chat?x=1"
    assert redacted == ["base_url"]
    assert SECRET not in redacted_url(url) and "code=[REDACTED]" in redacted_url(url)
    # Outside a URL's query "code" is an ordinary option name.
    assert redact_options({"code": "python"}) == ({"code": "python"}, [])
