"""The study metadata the user supplies (``config/study.yaml``, after REMBI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from bioingest.records import StudyFields, Term, field

#: Validated content of a study YAML file (the package's ``study.schema.yaml``).
Study = dict[str, Any]


def _term(item: Any) -> Term | None:
    """Return an ontology term (as the user wrote it) when it has both a name and an id."""
    return cast(Term, item) if item and item.get("name") and item.get("id") else None


def study_record(study: Study | None) -> StudyFields:
    """User study metadata as fields with origin ``user`` (organism and method keep their ids)."""
    study = study or {}
    return {
        "licence": field(study.get("licence"), "user"),
        "description": field(study.get("description"), "user"),
        "sample_preparation": field(study.get("sample_preparation"), "user"),
        "organism": field(_term(study.get("organism")), "user"),
        "imaging_method": field(_term(study.get("imaging_method")), "user"),
        "authors": field(study.get("authors") or None, "user"),
    }


def load_study(path: Path) -> Study:
    """Read and validate a study YAML file against the package's ``study.schema.yaml``."""
    import jsonschema
    import yaml

    from bioingest.errors import IngestError
    from bioingest.schemas import load_schema

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise IngestError(path, f"cannot read study metadata ({exc})") from None
    schema = load_schema("study.schema.yaml")
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise IngestError(path, f"{where}: {exc.message}") from None
    assert isinstance(data, dict)
    return data
