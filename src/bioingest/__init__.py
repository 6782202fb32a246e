"""bioingest: microscopy acquisitions to FAIR OME-Zarr."""

from importlib.metadata import PackageNotFoundError, version

try:
    # Written once, in pyproject.toml; read from the installed distribution.
    __version__ = version("bioingest")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
