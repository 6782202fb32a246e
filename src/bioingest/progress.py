"""Progress lines for long steps: every 10 % of the work, so logs are the same every run."""

from __future__ import annotations

import logging

log = logging.getLogger("bioingest")


class Progress:
    """Log ``label: done/total (pct)`` each time another tenth of the work is done."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self._tenth = 0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units of work; report when a new tenth is reached."""
        self.done += n
        tenth = min(10, self.done * 10 // self.total)
        if tenth > self._tenth:
            self._tenth = tenth
            pct = 100.0 * self.done / self.total
            log.info("%s: %d/%d (%.0f%%)", self.label, self.done, self.total, pct)
