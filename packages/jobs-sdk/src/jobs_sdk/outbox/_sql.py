"""The outbox's SQL, named blocks of queries.sql loaded once, with the table's name in."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

__all__ = ["Queries", "check_table"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}(\.[A-Za-z_][A-Za-z0-9_]{0,50})?$")


def check_table(table: str) -> str:
    if not _IDENTIFIER.match(table):
        raise ValueError(
            f"outbox table {table!r} is not a plain identifier: use letters, digits and _, "
            "optionally schema.table"
        )
    return table


@cache
def _blocks() -> dict[str, str]:
    text = (Path(__file__).parent / "queries.sql").read_text()
    blocks: dict[str, str] = {}
    for chunk in text.split("-- name: ")[1:]:
        name, _, body = chunk.partition("\n")
        blocks[name.strip()] = body.strip()
    return blocks


class Queries:
    """The named queries for one outbox table."""

    def __init__(self, table: str) -> None:
        name = check_table(table).replace(".", "_")
        self._sql = {k: v.format(table=table, name=name) for k, v in _blocks().items()}

    def __getitem__(self, name: str) -> str:
        return self._sql[name]
