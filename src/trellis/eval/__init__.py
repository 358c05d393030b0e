"""``trellis eval``'s library: score a flow's variants over labelled data, honestly.

- :mod:`~trellis.eval.dataset`: JSONL items with the label taken out of the inputs;
- :mod:`~trellis.eval.scorers`: ``exact``, ``number``, ``json-field:PATH``, user functions;
- :mod:`~trellis.eval.variants`: named role bindings and parameter sweeps;
- :mod:`~trellis.eval.runner`: every variant as a recorded batch, every item scored;
- :mod:`~trellis.eval.summary` / :mod:`~trellis.eval.stats`: the figures, bootstrap CIs;
- :mod:`~trellis.eval.selection`: choose on a train split, report on the test split;
- :mod:`~trellis.eval.report`: the JSON object and the printed tables.
"""

from trellis.eval.dataset import Dataset, EvalItem, load_dataset
from trellis.eval.report import eval_report, render_eval
from trellis.eval.runner import EvalRun, ItemOutcome, VariantRun, run_eval
from trellis.eval.scorers import Scorer, load_scorer
from trellis.eval.selection import Selection, Target, parse_target, select
from trellis.eval.summary import VariantSummary, relative, summarize
from trellis.eval.variants import (
    Sweep,
    Variant,
    expand,
    parse_sweep,
    parse_variant,
    resolve_bindings,
)

__all__ = [
    "Dataset",
    "EvalItem",
    "EvalRun",
    "ItemOutcome",
    "Scorer",
    "Selection",
    "Sweep",
    "Target",
    "Variant",
    "VariantRun",
    "VariantSummary",
    "eval_report",
    "expand",
    "load_dataset",
    "load_scorer",
    "parse_sweep",
    "parse_target",
    "parse_variant",
    "relative",
    "render_eval",
    "resolve_bindings",
    "run_eval",
    "select",
    "summarize",
]
