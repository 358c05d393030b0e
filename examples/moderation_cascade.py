"""Moderation cascade: cheap checks first, the LLM only for what they cannot decide.

Three stages of rising cost, each running only when the one before was unsure:

1. ``quick_filter``: regular expressions for the obvious cases (spam links, slurs,
   "click here", ALL-CAPS shouting). When one matches, the verdict is final and no later
   stage runs: the comment costs nothing.
2. ``classifier``: a tiny local "ML" model (a hand-weighted bag-of-words logistic
   regression, plain Python, no network). Runs only when the quick filter was not
   confident (``when=``).
3. ``llm_review``: an LLM call on role ``small``, only when the classifier's score is
   ambiguous (0.3–0.7). When the quick filter exited early, ``classifier`` is skipped and
   so is this step: the engine skips a step whose condition reads a skipped step.

``decision`` reads all three (two as ``Optional``, so it runs whichever stages ran) and
records which stage decided. ``result.usage.cost_usd`` is the cost of one comment: 0 for
every comment decided before the LLM stage.

Run it over the sample comments::

    trellis run examples/moderation_cascade.py:flow \\
        --input-file examples/data/comments.jsonl --config examples/trellis.toml

or one comment: ``python examples/moderation_cascade.py``.
"""

import itertools
import math
import re
from typing import Literal

from pydantic import BaseModel

import trellis as tl

Verdict = Literal["allow", "block"]


class QuickVerdict(BaseModel):
    verdict: Verdict
    confidence: Literal["high", "low"]
    rule: str | None = None  # the rule that matched, when one did


class ClassifierScore(BaseModel):
    score: float  # estimated probability that the comment breaks the rules
    top_terms: list[str]  # the terms that weighed most, for the record


class LLMReview(BaseModel):
    violates: bool
    category: Literal["none", "harassment", "threat", "hate", "spam", "self_harm", "other"]
    reason: str


class Moderation(BaseModel):
    verdict: Verdict
    decided_by: Literal["quick_filter", "classifier", "llm_review"]
    reason: str


flow = tl.Flow(
    "moderation-cascade",
    inputs={"text": str},
    description="Regex filter, then a local classifier, then an LLM for ambiguous comments.",
)

# -- stage 1: patterns ---------------------------------------------------------------------

BLOCK_RULES: dict[str, re.Pattern[str]] = {
    "slur": re.compile(r"\[slur\]", re.IGNORECASE),
    "spam_link": re.compile(r"https?://|www\.", re.IGNORECASE),
    "spam_phrase": re.compile(
        r"click here|dm me|giveaway|lucky winner|hot singles|no prescription|buy cheap",
        re.IGNORECASE,
    ),
    "shouting": re.compile(r"\b[A-Z]{2,}(?:\s+[A-Z]{2,}){2,}\b"),  # three+ words in caps
}


@flow.step
def quick_filter(text: str) -> QuickVerdict:
    """Block on an obvious pattern with high confidence; otherwise pass it on, unsure."""
    for rule, pattern in BLOCK_RULES.items():
        if pattern.search(text):
            return QuickVerdict(verdict="block", confidence="high", rule=rule)
    return QuickVerdict(verdict="allow", confidence="low")


# -- stage 2: a local bag-of-words model -----------------------------------------------------

# Hand-set weights of a logistic model over words and word pairs; the bias keeps
# ordinary comments well below 0.3.
WEIGHTS: dict[str, float] = {
    "idiot": 3.0, "worthless": 2.5, "dumbest": 2.0, "stupid": 2.0, "shut up": 1.5,
    "kill": 2.5, "you live": 3.0, "see what": 1.0, "nobody wants": 2.0, "banned": 1.2,
    "fired": 1.2, "ashamed": 1.5, "criminal": 1.5, "worst": 1.2, "embarrassed": 1.0,
    "impossible": 1.0, "bad": 0.8, "you people": 1.5, "genius": 1.4, "wow": 0.8,
    "brilliant": 0.7, "sure because": 1.5, "dose": 2.3, "withdrawal": 2.0,
    "antidepressants": 1.0, "ibuprofen": 1.2,
    "thanks": -1.5, "thank": -1.5, "great": -1.0, "love": -1.2, "helpful": -1.5,
    "appreciate": -1.5, "happy": -1.0, "congrats": -1.0, "beautiful": -1.0,
    "doctor": -0.5, "respectfully": -1.5,
}  # fmt: skip
BIAS = -3.0


def _features(text: str) -> list[str]:
    words = re.findall(r"[a-z']+", text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


@flow.step(when=lambda quick_filter: quick_filter.confidence == "low")
def classifier(text: str) -> ClassifierScore:
    """Score the comment with the local model (no API call, effectively free)."""
    hits = [f for f in _features(text) if f in WEIGHTS]
    logit = BIAS + sum(WEIGHTS[f] for f in hits)
    top = sorted(dict.fromkeys(hits), key=lambda f: -abs(WEIGHTS[f]))[:3]  # stable order
    return ClassifierScore(score=round(1 / (1 + math.exp(-logit)), 3), top_terms=top)


# -- stage 3: the LLM, for the ambiguous middle ---------------------------------------------

AMBIGUOUS = (0.3, 0.7)


@flow.step(when=lambda classifier: AMBIGUOUS[0] <= classifier.score <= AMBIGUOUS[1])
async def llm_review(text: str, llm: tl.LLM) -> LLMReview:
    """Ask a small model for a judgement that takes context and tone into account."""
    return await llm.generate(
        "Does this comment break a community policy against harassment, threats, hate, "
        "spam or dangerous advice? Consider context, idiom and sarcasm: heated or rude is "
        f"not the same as a violation.\n\nComment: {text}",
        output=LLMReview,
        model="small",
        temperature=0.0,
        max_tokens=200,
    )


# -- the verdict ---------------------------------------------------------------------------


@flow.step
def decision(
    quick_filter: QuickVerdict,
    classifier: ClassifierScore | None,
    llm_review: LLMReview | None,
) -> Moderation:
    """The verdict of the last stage that ran; ``None`` means that stage was skipped."""
    if llm_review is not None:
        verdict: Verdict = "block" if llm_review.violates else "allow"
        return Moderation(verdict=verdict, decided_by="llm_review", reason=llm_review.reason)
    if classifier is not None:
        verdict = "block" if classifier.score > AMBIGUOUS[1] else "allow"
        terms = ", ".join(classifier.top_terms) or "no weighted terms"
        reason = f"classifier score {classifier.score:.2f} ({terms})"
        return Moderation(verdict=verdict, decided_by="classifier", reason=reason)
    return Moderation(
        verdict=quick_filter.verdict,
        decided_by="quick_filter",
        reason=f"matched rule {quick_filter.rule!r}",
    )


if __name__ == "__main__":
    result = flow.run_sync(
        {"text": "Honestly I'd kill for a coffee right now."},
        models={"small": "sim:small", "large": "sim:large"},
    )
    print(result["decision"].model_dump_json(indent=2))
    print("skipped:", result.skipped)
    print(f"cost: ${result.usage.cost_usd:.6f} over {result.usage.calls} LLM call(s)")
