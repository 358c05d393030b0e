"""Leases: one process executes a run at a time, and a stalled one can never write again.

A lease is an owner (``host:pid:tag``), an expiry and an *epoch* on the run's row. Every
grant increments the epoch (:meth:`Store.claim_lease`); the holder writes the run's records
with its epoch, and the store refuses a write from an older epoch
(:class:`~trellis.errors.LeaseLostError`). That fencing is what protects a run from a
process that stalled past the TTL (SIGSTOP, a suspended VM, a plain step blocking the event
loop): such a process cannot renew its lease at all, another process takes the run over,
and when the first one wakes its very next write is refused.

The heartbeat renews the lease every third of the TTL on the event loop. A renewal that
fails (the lease was taken over) marks the lease lost and tells the holder, which stops its
work on the run without writing anything more. A renewal that comes late (the loop was
blocked) but finds the lease still ours simply goes on.

:func:`owner_is_dead` tells whether a lease's owner is a process of this host that no longer
runs (a killed process not yet reaped by its parent, a zombie, counts as dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable

from trellis.errors import ConfigurationError, LeaseLostError, RunLockedError, StoreError
from trellis.store.base import Store

__all__ = ["Lease", "check_lease_ttl", "owner_is_dead", "process_owner"]


def process_owner() -> str:
    """Who holds a lease: host, pid and a tag, unique to this owner: a random part (pids
    are reused) drawn once per process and a count of the owners it made."""
    global _tag
    pid = os.getpid()
    if _tag is None or _tag[0] != pid:  # a forked child draws its own
        _tag = (pid, f"{_hostname()}:{pid}:{secrets.token_hex(3)}", itertools.count())
    return f"{_tag[1]}.{next(_tag[2]):x}"


_tag: tuple[int, str, itertools.count[int]] | None = None


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


def check_lease_ttl(ttl: float) -> float:
    """``ttl`` if it is a usable lease duration: a finite number of seconds above zero."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigurationError(f"lease_ttl must be a number of seconds, got {ttl!r}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigurationError(
            f"lease_ttl must be a finite number of seconds above 0, got {ttl!r} (a dead "
            "process's runs stay locked for that long)"
        )
    return float(ttl)


def owner_is_dead(owner: str) -> bool | None:
    """Whether a lease owner (``host:pid:tag``) is a process of this host that no longer
    runs: True / False, or None when that cannot be told (another host, odd owner). A
    zombie (killed, not reaped yet) is dead."""
    parts = owner.split(":")
    if len(parts) < 3:
        return None
    host = ":".join(parts[:-2])
    if host != socket.gethostname():
        return None
    try:
        pid = int(parts[-2])
    except ValueError:
        return None
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    except OSError:
        return None
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and only waits to be reaped (Linux ``/proc``; False where
    that cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses; the state follows the
    # last closing parenthesis.
    _, _, rest = stat.rpartition(b")")
    fields = rest.split()
    return bool(fields) and fields[0] in (b"Z", b"X")


class Lease:
    """One owner's hold on one run's lease: acquire, heartbeat, release, and the epoch every
    write of the run carries."""

    def __init__(self, store: Store, run_id: str, owner: str, ttl: float) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.ttl = check_lease_ttl(ttl)
        self.epoch: int | None = None  # set while held
        self.lost: LeaseLostError | None = None  # set once another process took it over
        self.released = False

    def adopt(self, epoch: int) -> None:
        """The lease was granted when the run was created (with ``epoch``)."""
        self.epoch = epoch
        self.released = False

    def acquire(self) -> int:
        """Take the lease; its epoch. A live holder is :class:`RunLockedError`."""
        claim = self.store.claim_lease(self.run_id, self.owner, time.time(), self.ttl)
        if not claim.granted:
            row = self.store.get_run(self.run_id)
            left = (row.lease_expires or 0.0) - time.time() if row else 0.0
            holder = claim.holder or "another process"
            raise RunLockedError(
                f"run {self.run_id} is being executed by {holder} (its lease expires in "
                f"{max(0.0, left):.0f}s if that process died); try again later",
                run_id=self.run_id,
                owner=holder,
            )
        self.epoch = claim.epoch
        self.released = False
        return claim.epoch

    @contextlib.asynccontextmanager
    async def hold(
        self, on_lost: Callable[[LeaseLostError], None] | None = None
    ) -> AsyncIterator[Lease]:
        """:meth:`held`, as an async context manager."""
        with self.held(on_lost):
            yield self

    def held(self, on_lost: Callable[[LeaseLostError], None] | None = None) -> _Held:
        """Hold the lease (acquiring it unless adopted) while the body runs, renewing it
        (in a running event loop). If another process takes it over, :attr:`lost` is set
        and ``on_lost`` is told: the holder must stop its work on the run. Released at the
        end (unless lost)."""
        return _Held(self, on_lost)

    def release(self) -> None:
        """Give the lease up now, so that the next process need not wait for it to expire
        (once: a second call does nothing)."""
        if self.epoch is None or self.lost is not None or self.released:
            return
        self.released = True
        with contextlib.suppress(StoreError):  # it then expires on its own
            self.store.release_lease(self.run_id, self.owner, self.epoch)

    def lost_error(self) -> LeaseLostError:
        """The error that says this process lost the run to another one."""
        holder: str | None = None
        current: int | None = None
        with contextlib.suppress(StoreError):
            row = self.store.get_run(self.run_id)
            if row is not None:
                holder, current = row.lease_owner, row.lease_epoch
        return LeaseLostError(
            f"run {self.run_id}: this process lost its lease to {holder or 'another process'} "
            f"(it could not renew it within --lease-ttl {self.ttl:g}s: it stalled or was "
            "stopped); it stops its work on the run so that only one process executes it",
            run_id=self.run_id,
            epoch=self.epoch,
            current=current,
            owner=holder,
        )


class _Held:
    """:meth:`Lease.held` (a class, not a generator: one per durable run)."""

    __slots__ = ("beat", "lease", "on_lost")

    def __init__(self, lease: Lease, on_lost: Callable[[LeaseLostError], None] | None) -> None:
        self.lease, self.on_lost = lease, on_lost
        self.beat: _Heartbeat | None = None

    def __enter__(self) -> Lease:
        lease = self.lease
        if lease.epoch is None:
            lease.acquire()
        self.beat = _Heartbeat(lease, asyncio.get_running_loop(), self.on_lost)
        return lease

    def __exit__(self, *exc: object) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.lease.release()


class _Heartbeat:
    """Renews a held lease every third of its TTL, on the event loop (a timer, not a task:
    nothing to await when the run ends). A renewal that fails (the lease was taken over)
    marks the lease lost and tells ``on_lost``; one that comes late (the loop was blocked)
    but finds the lease still ours simply goes on; a store error is retried at the next
    beat."""

    __slots__ = ("handle", "lease", "loop", "on_lost")

    def __init__(
        self,
        lease: Lease,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[LeaseLostError], None] | None,
    ) -> None:
        self.lease, self.loop, self.on_lost = lease, loop, on_lost
        self.handle: asyncio.TimerHandle | None = loop.call_later(lease.ttl / 3, self.renew)

    def renew(self) -> None:
        self.handle = None
        lease = self.lease
        if lease.released or lease.lost is not None:  # given up already: nothing to renew
            return
        try:
            renewed = lease.store.renew_lease(
                lease.run_id, lease.owner, time.time(), lease.ttl, lease.epoch
            )
        except StoreError:  # e.g. the database is busy: try again at the next beat
            renewed = True
        if not renewed:
            lease.lost = lease.lost_error()
            if self.on_lost is not None:
                self.on_lost(lease.lost)
            return
        self.handle = self.loop.call_later(lease.ttl / 3, self.renew)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
