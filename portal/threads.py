"""Threads of a kind of their own: blocking work (provider SDK calls, building a zip) runs in threads bounded per
kind, so that one slow kind waits only with itself and never holds the threads the others need."""

from __future__ import annotations

from anyio import CapacityLimiter
from anyio.lowlevel import RunVar


def per_loop_limiter(slot: RunVar[CapacityLimiter], size: int) -> CapacityLimiter:
    """The running event loop's limiter kept in `slot`, made with `size` tokens on first use. A limiter belongs
    to one event loop; RunVar keeps one per loop (the tests run several)."""
    try:
        return slot.get()
    except LookupError:
        limiter = CapacityLimiter(size)
        slot.set(limiter)
        return limiter
