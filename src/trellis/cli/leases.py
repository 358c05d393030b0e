"""What the CLI adds to the library's leases (:mod:`trellis.engine.lease`: the engine holds,
renews and fences them): ``--lease-ttl``'s default, waiting out the leases of a dead
process of this host before resuming (a zombie counts as dead; a live holder is refused
in one line, exit 2), and SIGTERM stopping a command as Ctrl-C does.

Every command installs the SIGTERM handler at start-up, so the engine's lease module and
the store load only when leases are waited for.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING

from trellis.cli.errors import CliError

if TYPE_CHECKING:
    from trellis.store.base import RunRow, Store

__all__ = [
    "DEFAULT_LEASE_TTL",
    "release_leases_on_sigterm",
    "wait_for_dead_leases",
]

DEFAULT_LEASE_TTL = 30.0


def release_leases_on_sigterm() -> None:
    """Make SIGTERM stop a command as Ctrl-C does: the run is cancelled, its leases are
    released (the next ``trellis resume`` need not wait for them to expire) and what
    finished is written. Without this, SIGTERM kills the process and its leases stay."""
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)


def _terminate_like_interrupt(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)  # asyncio's own while a run is going on
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job): interrupt all the same
        raise KeyboardInterrupt


def wait_for_dead_leases(
    store: Store,
    rows: Iterable[RunRow],
    *,
    echo: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Before resuming ``rows``: wait for the leases a dead process of this host left on
    them to expire; raise :class:`CliError` if one is held by a live (or unknown) process."""
    from trellis.engine.lease import owner_is_dead

    now = time.time()
    until = 0.0
    dead: set[str] = set()
    for row in rows:
        owner, expires = row.lease_owner, row.lease_expires
        if owner is None or expires is None or expires <= now:
            continue
        state = owner_is_dead(owner)
        if state is True:
            until = max(until, expires)
            dead.add(owner)
            continue
        where = "" if state is False else " (or it died on another host)"
        raise CliError(
            f"run {row.run_id} is being executed by {owner}{where}; its lease expires in "
            f"{expires - now:.0f}s if that process stopped; try again later"
        )
    if until > now:
        pids = ", ".join(sorted(o.split(":")[-2] for o in dead))
        echo(
            f"waiting {until - now:.1f}s for the lease(s) of stopped process {pids} to expire "
            "(--lease-ttl sets how long a lease lasts)"
        )
        sleep(until - time.time() + 0.05)
