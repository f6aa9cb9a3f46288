"""jobs_server.testing: the README's example runs as written, and the module exports what it
says it does."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import jobs_server.testing

README = Path(__file__).resolve().parents[2] / "packages" / "jobs-server" / "README.md"


def _examples() -> list[str]:
    section = README.read_text().split("## Testing with the in-memory store", 1)[1]
    return re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)


async def test_the_readme_example_passes() -> None:
    [example] = _examples()
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1 and inspect.iscoroutinefunction(tests[0])
    await tests[0]()


def test_the_module_exports_the_fakes_and_the_clock() -> None:
    assert sorted(jobs_server.testing.__all__) == [
        "InMemoryJobStore",
        "InMemoryPublisher",
        "ManualClock",
    ]
