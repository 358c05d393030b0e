"""Types shared by the CLI test flows (imported as a sibling module: tests sys.path setup)."""

from typing import Literal

from pydantic import BaseModel


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


class Topics(BaseModel):
    topics: list[str]
