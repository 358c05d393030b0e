"""``sim:`` without options skips validating them (``SimOptions`` builds its validator
when first used): the options are the same as validated defaults."""

from __future__ import annotations

import pytest

from trellis.errors import ConfigurationError
from trellis.models.sim import SimModel, SimOptions


def test_no_options_are_the_validated_defaults() -> None:
    validated = SimOptions.model_validate({})
    for options in (SimOptions.parse({}), SimModel("sim:small").options, SimOptions()):
        assert options == validated
        assert hash(options) == hash(validated)
        assert repr(options) == repr(validated)
        assert options.model_fields_set == set()
        assert options.model_dump() == validated.model_dump()


def test_given_options_are_still_validated() -> None:
    assert SimOptions.parse({"seed": "3", "latency-ms": "1-2"}).latency_bounds_ms == (1.0, 2.0)
    with pytest.raises(ConfigurationError, match="did you mean 'seed'"):
        SimOptions.parse({"sed": 1})
    with pytest.raises(ConfigurationError, match="invalid sim option rate_limit"):
        SimModel("sim:small", {"rate_limit": 2})


def test_a_binding_without_options_builds_no_validator() -> None:
    import subprocess
    import sys

    probe = (
        "from trellis.models.sim import SimModel, SimOptions\n"
        "SimModel('sim:small', {}), SimModel('sim:large')\n"
        "print(SimOptions.__pydantic_complete__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "False"
