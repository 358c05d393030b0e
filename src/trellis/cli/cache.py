"""``trellis cache stats`` and ``trellis cache clear``: the response cache in the store.

The cache is filled by runs with ``--cache`` (or ``cache=`` on a step, flow or engine). It
lives in the store, next to the runs: entries are LLM replies keyed by provider, model,
every request parameter, the messages and the output schema.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from trellis.cli.errors import command
from trellis.cli.jsonout import json_text
from trellis.cli.options import StoreOption, json_flag

__all__ = ["cache_app", "clear", "stats"]

cache_app = typer.Typer(
    name="cache",
    help="Inspect or empty the LLM response cache kept in the store (filled by --cache).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@cache_app.command()
@command
def stats(
    store: StoreOption = None,
    as_json: Annotated[
        bool,
        json_flag('Print {"store", "entries", "expired", "hits", "bytes"} instead of text.'),
    ] = False,
) -> None:
    """How many replies the cache holds, how many have expired, how often it was hit, and
    how many bytes the cached values take."""
    from trellis.cli.stores import reading_store  # the store loads when the command runs
    from trellis.store.base import CacheStats

    with reading_store(store) as (opened, url):
        if opened is None:
            result = CacheStats(entries=0, expired=0, hits=0, bytes=0)
        else:
            result = opened.cache_stats(time.time())
    if as_json:
        data = {
            "store": url,
            "entries": result.entries,
            "expired": result.expired,
            "hits": result.hits,
            "bytes": result.bytes,
        }
        typer.echo(json_text(data, indent=2))
        return
    typer.echo(
        f"{url}: {result.entries} cached repl{'y' if result.entries == 1 else 'ies'} "
        f"({result.expired} expired) · {result.hits} hit(s) · {_size(result.bytes)}"
    )


@cache_app.command()
@command
def clear(
    expired: Annotated[
        bool,
        typer.Option("--expired", help="Remove only the entries whose TTL has passed."),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Remove every cached reply (or only the expired ones). Recorded runs are kept."""
    from trellis.cli.stores import reading_store  # the store loads when the command runs

    with reading_store(store) as (opened, url):
        removed = 0
        if opened is not None:
            removed = opened.cache_clear(expired_only=expired, now=time.time())
    what = "expired " if expired else ""
    typer.echo(f"removed {removed} {what}cache entr{'y' if removed == 1 else 'ies'} from {url}")
