"""bioingest: microscopy acquisitions to FAIR OME-Zarr."""

__version__ = "0.1.0"
