"""Every call to a payment provider's SDK from async code goes through `provider_call`.

Both SDKs are synchronous (requests): a call blocks its thread for as long as the provider takes, up to the
adapters' timeouts (Mollie 2 s to connect and 5 s to read, Stripe 2 s and 10 s, once more on a network error).
On the event loop that would stop every page; in Starlette's shared thread pool (40 threads) a slow provider
would take the threads that PDF downloads, bulk writes and imports need. So provider calls get threads of their
own, at most PROVIDER_THREADS at a time per event loop (one server process): beyond that a call waits its turn,
and only other provider calls wait with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

from portal.threads import per_loop_limiter

P = ParamSpec("P")
T = TypeVar("T")

PROVIDER_THREADS = 10
_LIMITER: RunVar[CapacityLimiter] = RunVar("quittance_provider_threads")


def provider_limiter() -> CapacityLimiter:
    """This event loop's limiter for provider calls."""
    return per_loop_limiter(_LIMITER, PROVIDER_THREADS)


async def provider_call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)`, a blocking provider SDK call, in a provider thread."""
    return await to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=provider_limiter())
