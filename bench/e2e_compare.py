"""End to end, this checkout against another revision (and variants of our own settings), all
in one run, so that the ratios between them do not move with the machine's speed.

    infra/localstack/start.sh
    uv run python bench/e2e_compare.py --baseline REV [--runs 3] [--variant NAME:ARG=VALUE,...]
                                       [any option of bench/e2e.py]

Each run measures REV (its own worktree and lock, see bench/_common.py `baseline_python`),
then ours, then each `--variant` (ours with some of bench/e2e.py's options changed, e.g.
`--variant process:isolation=process`), rotating the order from run to run. For each it
prints throughput, p50 and p99 at `--rate`, and the CPU of our own processes per job, as the
median of the runs with min and max, and the ratio to REV taken within each run.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from _common import baseline_python, load_average, summary
from e2e import build_parser, our_cpu, run_ours
from procrastinate_e2e import MACHINE


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = [(args.baseline, {}), ("ours", {})]
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        overrides: dict[str, Any] = {}
        for pair in filter(None, settings.split(",")):
            key, _, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not hasattr(args, key):
                raise SystemExit(f"--variant {spec}: bench/e2e.py has no option --{key}")
            current = getattr(args, key)
            overrides[key] = type(current)(value) if current is not None else value
        out.append((name, overrides))
    return out


def figures(result: dict[str, Any]) -> dict[str, float]:
    cpu, lat = result["cpu_seconds"], result["latency"]
    ours, ours_lat = our_cpu(cpu), our_cpu(lat["cpu_seconds"])
    return {
        "jobs/s": result["throughput"],
        "p50 ms": lat["ms"].get("p50", float("nan")),
        "p99 ms": lat["ms"].get("p99", float("nan")),
        "our CPU ms/job": 1000 * ours / result["jobs"],
        "our CPU ms/job at rate": 1000 * ours_lat / lat["measured"],
        "PG xacts/job at rate": lat["pg_transactions"] / lat["measured"],
        "busy cores": cpu[MACHINE] / max(result["wall_seconds"], 1e-9),  # throughput phase
        "busy cores at rate": lat["cpu_seconds"][MACHINE] / max(lat["wall_seconds"], 1e-9),
    }


async def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--baseline", metavar="REV", required=True)
    parser.set_defaults(runs=3)  # bench/e2e.py's --runs, here the runs of every revision
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:ARG=VALUE,...")
    args = parser.parse_args()
    base_python = baseline_python(args.baseline)
    plan = variants(args)
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in plan}
    for run in range(args.runs):
        order = plan[run % len(plan) :] + plan[: run % len(plan)]
        for name, overrides in order:
            run_args = argparse.Namespace(**(vars(args) | overrides))
            python = base_python if name == args.baseline else None
            got = figures(await run_ours(run_args, python=python))
            results[name].append(got)
            print(
                f"run {run + 1} {name}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in got.items())
                + f" ({load_average()})",
                flush=True,
            )
    print()
    base = results[args.baseline]
    for name, _ in plan:
        rows = results[name]
        print(f"{name}:")
        for key in rows[0]:
            line = f"    {key:<24} {summary([r[key] for r in rows])}"
            if name != args.baseline and key in ("jobs/s", "our CPU ms/job at rate"):
                ratios = [r[key] / b[key] for r, b in zip(rows, base, strict=True)]
                line += f"; ratio to {args.baseline}: {summary(ratios)}"
            print(line)
    print(f"(median of {args.runs} runs, min and max; {load_average()})")


if __name__ == "__main__":
    asyncio.run(main())
