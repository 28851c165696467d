"""Loads billing profiles from YAML (see the header of billing_profiles.yaml for the schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domain.billing_profile import BillingProfile

DEFAULT_PROFILES_PATH = Path(__file__).with_name("billing_profiles.yaml")


def load_billing_profiles(path: Path | None = None) -> dict[str, BillingProfile]:
    """All profiles in the file, keyed by name.

    Raises ValueError naming the file, the profile and the offending field when
    the data is invalid; FileNotFoundError when the file does not exist.
    """
    path = Path(path) if path is not None else DEFAULT_PROFILES_PATH
    raw_profiles = _read_profiles_section(path)
    return {name: _build_profile(path, name, body) for name, body in raw_profiles.items()}


def _read_profiles_section(path: Path) -> dict[Any, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or "profiles" not in document:
        raise ValueError(f"{path}: expected a top-level 'profiles' mapping")
    profiles = document["profiles"]
    if not isinstance(profiles, dict) or not profiles:
        raise ValueError(f"{path}: 'profiles' must be a non-empty mapping of name to profile")
    return profiles


def _build_profile(path: Path, name: Any, body: Any) -> BillingProfile:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{path}: profile names must be non-empty strings, got {name!r}")
    if not isinstance(body, dict):
        raise ValueError(f"{path}: billing profile {name!r} must be a mapping of fields")
    if "name" in body and body["name"] != name:
        raise ValueError(
            f"{path}: billing profile {name!r}: field 'name' is {body['name']!r} but the key says {name!r}"
        )
    data = {**body, "name": name}
    dunning = data.get("dunning")
    if isinstance(dunning, dict) and "name" not in dunning:
        data["dunning"] = {**dunning, "name": name}
    try:
        return BillingProfile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: billing profile {name!r}: {_describe(exc)}") from exc


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(profile)"
        problems.append(f"field '{field}': {item['msg']}")
    return "; ".join(problems)
