"""Working with recorded runs: fork one (re-run it from a step with other bindings or
changed code, the rest taken from the record) and diff two."""

from trellis.history.diff import RunDiff, StepDiff, diff_runs
from trellis.history.fork import ForkPlan, fork, prepare_fork

__all__ = ["ForkPlan", "RunDiff", "StepDiff", "diff_runs", "fork", "prepare_fork"]
