"""Configuration: model bindings, roles, fallbacks and prices, from code or ``trellis.toml``."""

from __future__ import annotations

from pathlib import Path

import pytest

import trellis as tl
from trellis.config import ModelBinding, RoleBinding
from trellis.models.function import FunctionModel
from trellis.models.registry import ProviderRegistry

# -- ModelBinding.parse -------------------------------------------------------------------------


def test_parse_plain_spec() -> None:
    binding = ModelBinding.parse("sim:small")
    assert (binding.provider, binding.model, dict(binding.options)) == ("sim", "small", {})
    assert binding.name == "sim:small"
    assert str(binding) == "sim:small"


def test_parse_query_options() -> None:
    binding = ModelBinding.parse("sim:large?latency_ms=50-400&rate_limit=0.1&seed=3")
    assert binding.name == "sim:large"
    assert dict(binding.options) == {"latency_ms": "50-400", "rate_limit": "0.1", "seed": "3"}
    assert ModelBinding.parse(str(binding)) == binding


def test_keyword_options_win_over_the_query() -> None:
    binding = ModelBinding.parse("sim:small?seed=1&timeout=0.2", seed=9)
    assert binding.options["seed"] == 9
    assert binding.options["timeout"] == "0.2"
    assert binding.with_options(seed=4).options["seed"] == 4


def test_model_name_may_contain_colons_and_whitespace_is_trimmed() -> None:
    binding = ModelBinding.parse("  ollama:llama3:8b  ")
    assert (binding.provider, binding.model) == ("ollama", "llama3:8b")


@pytest.mark.parametrize("spec", ["small", ":small", "sim:", "", "  ", "?seed=1", "sim?x=1"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(tl.ConfigurationError, match="provider:model"):
        ModelBinding.parse(spec)


# -- Config ------------------------------------------------------------------------------------


def test_config_roles_from_strings_tables_and_bindings() -> None:
    config = tl.Config(
        {
            "small": "sim:small",
            "large": {"model": "sim:large", "latency_ms": "200-800", "fallbacks": ["small"]},
            "direct": ModelBinding("sim", "medium"),
            "role": RoleBinding(binding=ModelBinding("sim", "small"), fallbacks=("large",)),
        }
    )
    assert config.resolve("small") == RoleBinding(binding=ModelBinding("sim", "small"))
    large = config.resolve("large")
    assert large.binding.name == "sim:large"
    assert dict(large.binding.options) == {"latency_ms": "200-800"}
    assert large.fallbacks == ("small",)
    assert config.resolve("direct").binding.name == "sim:medium"
    assert config.resolve("role").fallbacks == ("large",)


def test_single_fallback_may_be_a_string() -> None:
    config = tl.Config({"a": "sim:small", "b": {"model": "sim:large", "fallbacks": "a"}})
    assert config.resolve("b").fallbacks == ("a",)


def test_resolve_a_direct_provider_model_spec() -> None:
    config = tl.Config({"small": "sim:small"})
    resolved = config.resolve("sim:large?seed=2")
    assert resolved.binding.name == "sim:large"
    assert resolved.binding.options == {"seed": "2"}
    assert resolved.fallbacks == ()


def test_resolve_unknown_role_lists_the_bound_roles() -> None:
    config = tl.Config({"small": "sim:small", "large": "sim:large"})
    with pytest.raises(tl.ConfigurationError) as info:
        config.resolve("medium")
    message = str(info.value)
    assert "'medium'" in message
    assert "large, small" in message


@pytest.mark.parametrize(
    "value",
    [
        42,
        {"latency_ms": "5"},
        {"model": 3},
        {"model": "sim:small", "fallbacks": [1]},
        "not-a-spec",
    ],
)
def test_bad_role_values(value: object) -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.Config({"small": value})  # type: ignore[dict-item]


def test_non_list_fallbacks_is_a_configuration_error() -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.Config({"small": {"model": "sim:small", "fallbacks": 5}})


def test_fallback_to_an_unbound_role_is_an_error() -> None:
    with pytest.raises(tl.ConfigurationError, match="'nowhere'"):
        tl.Config({"small": {"model": "sim:small", "fallbacks": ["nowhere"]}})
    # ... but a direct provider:model fallback is fine.
    tl.Config({"small": {"model": "sim:small", "fallbacks": ["sim:large"]}})


def test_with_models_adds_roles_and_checks_fallbacks() -> None:
    base = tl.Config({"small": "sim:small"}, prices={"sim:small": {"input": 1, "output": 2}})
    more = base.with_models({"large": {"model": "sim:large", "fallbacks": ["small"]}})
    assert set(more.roles) == {"small", "large"}
    assert set(base.roles) == {"small"}, "a Config is immutable"
    assert more.prices.price("sim:small") == tl.Price(1, 2)
    with pytest.raises(tl.ConfigurationError):
        base.with_models({"x": {"model": "sim:large", "fallbacks": ["missing"]}})


def test_prices() -> None:
    config = tl.Config(
        prices={"sim:small": {"input": 1.0, "output": 2.0}, "my:model": tl.Price(3, 4)}
    )
    assert config.prices.price("sim:small") == tl.Price(1.0, 2.0)
    assert config.prices.price("my:model") == tl.Price(3, 4)
    assert config.prices.price("sim:large") == tl.Price(2.5, 10.0), "defaults remain"
    assert config.prices.price("nobody:knows") is None
    assert config.prices.cost("nobody:knows", tl.Usage(10, 10)) is None
    assert config.prices.cost("my:model", tl.Usage(1_000_000, 500_000)) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "price",
    [
        {"input": 1.0},
        {"output": 1.0},
        {"input": "x", "output": 1},
        "cheap",
        5,
        {"input": -1, "output": 1},
    ],
)
def test_bad_prices(price: object) -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.Config(prices={"sim:small": price})  # type: ignore[dict-item]


# -- from_toml -----------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trellis.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_from_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models]
small = "sim:small?seed=3"
large = { model = "sim:large", latency_ms = "200-800" }
careful = { model = "sim:small", fallbacks = ["large", "sim:medium"], rate_limit = 0.05 }

[prices]
"sim:large" = { input = 3.0, output = 12.0 }
"custom:model" = { input = 1, output = 1 }
""",
    )
    config = tl.Config.from_toml(path)
    assert config.resolve("small").binding.options == {"seed": "3"}
    assert config.resolve("large").binding.options == {"latency_ms": "200-800"}
    careful = config.resolve("careful")
    assert careful.fallbacks == ("large", "sim:medium")
    assert careful.binding.options == {"rate_limit": 0.05}
    assert config.prices.price("sim:large") == tl.Price(3.0, 12.0)
    assert config.prices.price("custom:model") == tl.Price(1.0, 1.0)
    assert config.prices.price("sim:small") == tl.Price(0.15, 0.60)
    assert tl.Config.from_toml(str(path)).roles == config.roles


def test_from_toml_empty_file(tmp_path: Path) -> None:
    config = tl.Config.from_toml(write(tmp_path, ""))
    assert config.roles == {}


def test_from_toml_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[models]\nsmall = "sim:small"\n[modles]\nx = 1\n')
    with pytest.raises(tl.ConfigurationError, match="modles"):
        tl.Config.from_toml(path)


def test_from_toml_models_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.Config.from_toml(write(tmp_path, 'models = "sim:small"\n'))


def test_from_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(tl.ConfigurationError, match="does not exist"):
        tl.Config.from_toml(tmp_path / "nope.toml")


def test_from_toml_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(tl.ConfigurationError, match="not valid TOML"):
        tl.Config.from_toml(write(tmp_path, "[models\nsmall = sim:small\n"))


def test_from_toml_bad_binding(tmp_path: Path) -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.Config.from_toml(write(tmp_path, '[models]\nsmall = "small"\n'))


def test_from_toml_bad_fallback(tmp_path: Path) -> None:
    path = write(tmp_path, '[models]\nsmall = { model = "sim:small", fallbacks = ["big"] }\n')
    with pytest.raises(tl.ConfigurationError, match="big"):
        tl.Config.from_toml(path)


async def test_toml_config_drives_an_engine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[models]\ndefault = "sim:small?seed=1"\n'
        '[prices]\n"sim:small" = { input = 100, output = 100 }\n',
    )
    flow = tl.Flow("toml")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("hello")

    async with tl.Engine(config=tl.Config.from_toml(path)) as engine:
        result = await engine.run(flow)
    assert result.ok
    [call] = result.calls
    assert call.model == "sim:small"
    assert call.cost_usd == pytest.approx((call.input_tokens + call.output_tokens) * 100 / 1e6)


# -- providers --------------------------------------------------------------------------------


def test_unknown_provider_lists_known_providers() -> None:
    registry = ProviderRegistry({"mine": lambda b: FunctionModel(lambda r: "x")})
    with pytest.raises(tl.ConfigurationError) as info:
        registry.create(ModelBinding.parse("openia:gpt-4o"))
    message = str(info.value)
    assert "'openia'" in message
    assert "mine" in message
    assert "sim" in message


async def test_unknown_provider_fails_the_step_with_a_configuration_error() -> None:
    flow = tl.Flow("p")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    async with tl.Engine(models={"small": "nope:model"}) as engine:
        result = await engine.run(flow)
    error = result.steps["ask"].error
    assert error is not None
    assert error.type == "ConfigurationError"
    assert "'nope'" in error.message
    assert "sim" in error.message


async def test_bad_simulator_option_is_a_configuration_error() -> None:
    flow = tl.Flow("p")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    async with tl.Engine(models={"small": "sim:small?latencyms=5"}) as engine:
        result = await engine.run(flow)
    error = result.steps["ask"].error
    assert error is not None
    assert error.type == "ConfigurationError"
    assert "latency_ms" in error.message


async def test_custom_provider_receives_the_binding() -> None:
    seen: list[ModelBinding] = []

    def factory(binding: ModelBinding) -> tl.Model:
        seen.append(binding)
        return FunctionModel(lambda r: f"from {binding.model}", name=binding.name)

    flow = tl.Flow("p")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    async with tl.Engine(
        models={"small": "mine:v1?temperature=0"}, providers={"mine": factory}
    ) as engine:
        result = await engine.run(flow)
        again = await engine.run(flow)
    assert result["ask"] == "from v1"
    assert again["ask"] == "from v1"
    assert seen == [ModelBinding("mine", "v1", {"temperature": "0"})], "one client per binding"
