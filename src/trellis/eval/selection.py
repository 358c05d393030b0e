"""Choosing a setting honestly: the cheapest one meeting a target on a train part, reported
on the held-out test part; repeated over random splits for mean ± sd.

Items' outcomes do not depend on the split (each item ran once per setting), so a split
only partitions the recorded outcomes: repeating it costs no model calls.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from trellis.errors import InputError
from trellis.eval.runner import VariantRun
from trellis.eval.stats import mean_sd
from trellis.eval.summary import VariantSummary, relative, summarize

__all__ = ["Selection", "SplitResult", "Target", "parse_target", "select", "split_indices"]

_TARGET = re.compile(r"^\s*score\s*>=\s*([0-9]*\.?[0-9]+)\s*(\*\s*ref)?\s*$")


@dataclass(frozen=True, slots=True)
class Target:
    """``score>=X`` (absolute) or ``score>=X*ref`` (a share of the reference's score)."""

    threshold: float
    of_reference: bool
    text: str

    def bar(self, reference_score: float | None) -> float:
        if not self.of_reference:
            return self.threshold
        if reference_score is None:
            raise InputError(f"--target {self.text!r} needs --reference")
        return self.threshold * reference_score


def parse_target(text: str) -> Target:
    match = _TARGET.match(text)
    if match is None:
        raise InputError(
            f"--target {text!r} must be 'score>=X' or 'score>=X*ref' (e.g. score>=0.95*ref)"
        )
    return Target(float(match.group(1)), match.group(2) is not None, text.strip())


def split_indices(n: int, train: float, seed: int) -> tuple[list[int], list[int]]:
    """A random split of ``range(n)``: ``train`` share for training, the rest for test."""
    if not 0.0 < train < 1.0:
        raise InputError(f"--split train={train:g}: the train share must be between 0 and 1")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = max(1, min(n - 1, round(n * train)))
    return sorted(order[:cut]), sorted(order[cut:])


@dataclass(frozen=True, slots=True)
class SplitResult:
    """One split: what was chosen on train and how it did on test."""

    seed: int
    chosen: str | None  # None: no setting met the target on train
    train: VariantSummary | None
    test: VariantSummary | None
    reference_test: VariantSummary | None
    score_share: float | None  # chosen's test score / reference's test score
    cost_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "chosen": self.chosen,
            "train": self.train.to_dict() if self.train else None,
            "test": self.test.to_dict() if self.test else None,
            "reference_test": self.reference_test.to_dict() if self.reference_test else None,
            "score_share": self.score_share,
            "cost_share": self.cost_share,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    target: Target
    train_share: float
    splits: tuple[SplitResult, ...]

    def chosen_counts(self) -> dict[str, int]:
        return dict(Counter(s.chosen or "(none)" for s in self.splits).most_common())

    def test_score(self) -> tuple[float, float]:
        return mean_sd([s.test.score for s in self.splits if s.test is not None])

    def score_share(self) -> tuple[float, float]:
        return mean_sd([s.score_share for s in self.splits if s.score_share is not None])

    def cost_share(self) -> tuple[float, float]:
        return mean_sd([s.cost_share for s in self.splits if s.cost_share is not None])

    def to_dict(self) -> dict[str, Any]:
        score, score_sd = self.test_score()
        share, share_sd = self.score_share()
        cost, cost_sd = self.cost_share()
        return {
            "target": self.target.text,
            "train_share": self.train_share,
            "repeats": len(self.splits),
            "chosen": self.chosen_counts(),
            "test_score_mean": score,
            "test_score_sd": score_sd,
            "score_share_mean": share,
            "score_share_sd": share_sd,
            "cost_share_mean": cost,
            "cost_share_sd": cost_sd,
            "splits": [s.to_dict() for s in self.splits],
        }


def select(
    runs: list[VariantRun],
    *,
    target: Target,
    reference: str | None,
    train_share: float = 0.5,
    seed: int = 0,
    repeats: int = 1,
) -> Selection:
    """For each of ``repeats`` splits (seeds ``seed``, ``seed+1``...): among the settings
    other than the reference, the cheapest whose *train* score meets ``target`` (ties: the
    higher train score), then its *test* figures against the reference's test figures."""
    if repeats < 1:
        raise InputError("--repeats must be at least 1")
    by_name = {r.variant.name: r for r in runs}
    if reference is not None and reference not in by_name:
        raise InputError(f"--reference {reference!r} is not a variant")
    candidates = [r for r in runs if r.variant.name != reference]
    if not candidates:
        raise InputError("--target needs at least one variant besides the reference")
    n = len(runs[0].items)
    splits: list[SplitResult] = []
    for k in range(repeats):
        train, test = split_indices(n, train_share, seed + k)
        ref_train = summarize(by_name[reference], train, ci=False) if reference else None
        ref_test = summarize(by_name[reference], test) if reference else None
        bar = target.bar(ref_train.score if ref_train else None)
        meeting = []
        for run in candidates:
            summary = summarize(run, train, ci=False)
            if summary.score >= bar - 1e-12:
                cost = summary.cost_usd if summary.cost_usd is not None else float("inf")
                meeting.append((cost, -summary.score, run.variant.name, summary))
        if not meeting:
            splits.append(SplitResult(seed + k, None, None, None, ref_test, None, None))
            continue
        meeting.sort(key=lambda m: (m[0], m[1], m[2]))
        _, _, name, train_summary = meeting[0]
        test_summary = summarize(by_name[name], test)
        rel = relative(test_summary, ref_test) if ref_test else None
        splits.append(
            SplitResult(
                seed + k,
                name,
                train_summary,
                test_summary,
                ref_test,
                rel.score_share if rel else None,
                rel.cost_share if rel else None,
            )
        )
    return Selection(target, train_share, tuple(splits))
