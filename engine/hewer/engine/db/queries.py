"""Named SQL: every statement lives in ``sql/queries/*.sql`` under a ``-- name: x`` header.

Keeping SQL out of Python makes the statements reviewable as SQL, and gives each one a
name that shows up in logs and benchmarks.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class QueryNotFound(KeyError):
    """A query name that no ``.sql`` file defines."""


def parse_queries(text: str) -> dict[str, str]:
    """Split one file into ``{name: statement}``; text before the first header is ignored."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = body.strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


@cache
def all_queries() -> dict[str, str]:
    """Every named query of the package, loaded once."""
    folder = resources.files("hewer.engine.db").joinpath("sql", "queries")
    merged: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, statement in parse_queries(entry.read_text(encoding="utf-8")).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined in two files")
            merged[name] = statement
    return merged


def query(name: str) -> str:
    try:
        return all_queries()[name]
    except KeyError:
        raise QueryNotFound(name) from None
