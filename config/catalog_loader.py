"""Reads the catalog YAML from disk; the validation itself lives in domain.catalog."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from domain.catalog import Catalog, parse_catalog


def load_catalog(path: Path) -> Catalog:
    with path.open(encoding="utf-8") as handle:
        return parse_catalog(yaml.safe_load(handle))


@lru_cache
def cached_catalog(path: Path) -> Catalog:
    return load_catalog(path)
