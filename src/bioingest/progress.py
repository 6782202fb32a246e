"""Throttled progress lines on stderr for long steps."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("bioingest")


class Progress:
    """Log ``label: done/total (pct)`` at most every ``interval`` seconds, and at the end."""

    def __init__(self, label: str, total: int, *, interval: float = 5.0) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.interval = interval
        self._last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units of work and report if enough time has passed."""
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.interval:
            self._last = now
            pct = 100.0 * self.done / self.total
            log.info("%s: %d/%d (%.0f%%)", self.label, self.done, self.total, pct)
