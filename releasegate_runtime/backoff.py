"""Capped exponential backoff shared by everything that retries for ever (the outbox relay, background loops,
the process supervisor): a retry storm against a broker or database that is down helps nobody, and a long
healthy run earns a fast retry again."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays `initial`, 2×, 4×… up to `cap` seconds. `jitter` (0..1) shortens each delay by a random fraction
    up to that much, so many clients that failed together do not retry together. `reset()` after a success."""

    def __init__(
        self, initial: float, cap: float, *, jitter: float = 0.0, rand: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial ({initial}) <= cap ({cap})")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, not {jitter}")
        self._initial, self._cap, self._jitter, self._rand = initial, cap, jitter, rand
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next retry; each call doubles the following one, up to the cap."""
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay * (1 - self._jitter * self._rand())

    def reset(self) -> None:
        self._next = self._initial
