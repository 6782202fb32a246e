"""bioingest: microscopy acquisitions to FAIR OME-Zarr."""


def __getattr__(name: str) -> str:
    # Read on first use: a '--warm' job's client never needs it (importlib.metadata
    # costs about 30 ms of every job's start).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            # Written once, in pyproject.toml; read from the installed distribution.
            return version("bioingest")
        except PackageNotFoundError:  # imported from a source tree never installed
            return "0+unknown"
    raise AttributeError(f"module 'bioingest' has no attribute {name!r}")
