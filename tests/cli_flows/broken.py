"""A flow file that cannot be imported."""

import trellis_cli_test_missing_module  # noqa: F401

import trellis as tl

flow = tl.Flow("broken")
