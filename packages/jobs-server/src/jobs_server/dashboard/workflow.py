"""A workflow as the dashboard draws it: its jobs in layers (a job one layer below its deepest
parent), each with its parents and children, as a plain layered list (no script, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from jobs_schema import Job
from jobs_schema.workflows import JobGraph

__all__ = ["Layered", "Neighbours", "layered", "neighbours"]


@dataclass
class Neighbours:
    """A job's parents and children among a graph's jobs."""

    parents: list[Job] = field(default_factory=list)
    children: list[Job] = field(default_factory=list)


@dataclass
class Layered:
    layers: list[list[Job]]
    parents: dict[UUID, list[UUID]]
    truncated: bool


def neighbours(graph: JobGraph, job_id: UUID) -> Neighbours:
    by_id = {j.id: j for j in graph.jobs}
    out = Neighbours()
    for link in graph.links:
        if link.child == job_id and link.parent in by_id:
            out.parents.append(by_id[link.parent])
        if link.parent == job_id and link.child in by_id:
            out.children.append(by_id[link.child])
    return out


def layered(graph: JobGraph) -> Layered:
    """The graph's jobs by depth: roots first, each job below its deepest parent."""
    parents: dict[UUID, list[UUID]] = {j.id: [] for j in graph.jobs}
    for link in graph.links:
        parents[link.child].append(link.parent)
    depth: dict[UUID, int] = {}

    def depth_of(job_id: UUID) -> int:
        # iterative: a 1,000-job chain must not reach Python's recursion limit
        stack = [job_id]
        while stack:
            top = stack[-1]
            todo = [p for p in parents.get(top, []) if p not in depth]
            if todo:
                stack.extend(todo)
                continue
            depth[top] = 1 + max((depth[p] for p in parents.get(top, [])), default=-1)
            stack.pop()
        return depth[job_id]

    layers: list[list[Job]] = []
    for job in sorted(graph.jobs, key=lambda j: j.id):
        d = depth_of(job.id)
        while len(layers) <= d:
            layers.append([])
        layers[d].append(job)
    return Layered(layers, parents, graph.truncated)
