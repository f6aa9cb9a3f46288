"""Dependencies between the jobs of one request: the rules of a graph, checked before anything
is stored (docs/workflows.md).

An item of a batch request may name a `ref` (a name local to the request) and `depends_on`:
job ids of existing jobs, or refs of other items of the same request. A job with parents waits
(status `waiting`) until every parent has ended; then it becomes pending, or, when a parent
ended other than succeeded and its `on_parent_failure` is `cancel`, it ends cancelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from jobs_schema.limits import MAX_GRAPH_NODES, MAX_PARENTS

__all__ = [
    "MAX_GRAPH_NODES",
    "MAX_PARENTS",
    "UUID_PATTERN",
    "GraphRefused",
    "OnParentFailure",
    "check_graph",
    "parent_id",
]


class OnParentFailure(StrEnum):
    """What a waiting job does when a parent ends dead, cancelled or expired."""

    CANCEL = "cancel"  # end cancelled, and so do its descendants that cancel too
    RUN = "run"  # count that parent as ended, and run once every parent has ended


class GraphRefused(ValueError):
    """A request's graph breaks a rule; the message says which item and how to fix it."""


class _Node(Protocol):
    @property
    def ref(self) -> str | None: ...

    @property
    def depends_on(self) -> Sequence[str] | None: ...


# A job id as the API writes it; any other entry of depends_on is a ref.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)


def parent_id(entry: str) -> UUID | None:
    """The job id a `depends_on` entry names (a UUID written as the API writes ids), or None
    when it names a ref."""
    return UUID(entry) if _UUID.match(entry) else None


def check_graph(items: Sequence[_Node]) -> list[int]:
    """The items in an order where every parent comes before its children (parents named by
    id excepted), or GraphRefused: a ref given twice, a ref no item gives, a job depending on
    itself or a cycle."""
    refs: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.ref is None:
            continue
        if item.ref in refs:
            raise GraphRefused(
                f"jobs[{i}].ref {item.ref!r} is also the ref of jobs[{refs[item.ref]}]: "
                "give each item its own ref"
            )
        refs[item.ref] = i
    parents: list[list[int]] = []
    for i, item in enumerate(items):
        mine = []
        for entry in item.depends_on or ():
            if parent_id(entry) is not None:
                continue
            if entry not in refs:
                raise GraphRefused(
                    f"jobs[{i}].depends_on names {entry!r}, which is neither a job id nor "
                    "the ref of an item of this request"
                )
            if refs[entry] == i:
                raise GraphRefused(f"jobs[{i}] depends on itself ({entry!r})")
            mine.append(refs[entry])
        parents.append(mine)
    return _topological(parents)


def _topological(parents: list[list[int]]) -> list[int]:
    children: list[list[int]] = [[] for _ in parents]
    waiting = [len(p) for p in parents]
    for child, mine in enumerate(parents):
        for p in mine:
            children[p].append(child)
    order = [i for i, n in enumerate(waiting) if n == 0]
    for i in order:  # grows while it is walked
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
    if len(order) < len(parents):
        stuck = sorted(set(range(len(parents))) - set(order))
        raise GraphRefused(
            f"the dependencies form a cycle through jobs{stuck[:10]}: a job cannot wait, "
            "directly or not, for itself"
        )
    return order
