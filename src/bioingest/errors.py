"""The one exception type users see: a one-line message naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class IngestError(Exception):
    """A dataset-level failure, printed as ``<path>: <problem>`` on one line."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}")


class ServiceError(IngestError):
    """The machine, not the input, is at fault: no Java, no jar, the JVM server lost.

    Never recorded as a dataset's outcome: the job fails, and a rerun retries it.
    """
