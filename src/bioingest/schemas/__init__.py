"""The JSON Schemas of the workflow's inputs, shipped as package data.

The workflow (``validate()`` in ``workflow/rules/common.smk``) and the package check
against the same files, whether bioingest is installed editable or from a wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml


def schema_path(name: str) -> Path:
    """Return the file of the schema ``name`` (e.g. ``"config.schema.yaml"``).

    The file is in the installed package (wheels install unpacked, so this is a real file).
    """
    path = Path(str(files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def load_schema(name: str) -> dict[str, Any]:
    """Load the schema ``name`` as a dictionary (YAML or JSON)."""
    loaded = yaml.safe_load(files(__name__).joinpath(name).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"schema {name} is not a mapping")
    return loaded
