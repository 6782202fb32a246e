"""The ``bioingest`` command: a ``--warm`` job goes to the warm server, the rest to the CLI.

Kept apart from :mod:`bioingest.cli` so that a warm job's own process imports next to
nothing before handing its arguments over.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run ``bioingest`` with the command line's arguments; return the exit status."""
    given = sys.argv[1:]
    if "--warm" in given:
        from bioingest import warm

        given.remove("--warm")
        try:
            if given and given[0] in warm.VERBS:
                return warm.run(given)
            # Any other verb runs here, and starts the server for the jobs after it.
            warm.prestart()
        except OSError as exc:
            sys.stderr.write(f"bioingest: no warm server ({exc}): running here\n")
    from bioingest.cli import main as run_here

    return run_here(given)


if __name__ == "__main__":
    sys.exit(main())
