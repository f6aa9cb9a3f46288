"""Any benchmark script of bench/, this checkout against another revision, in one run: the
ratios between them do not move with the machine's speed, the figures themselves do.

    uv run python bench/compare.py --baseline REV [--runs 3] \\
        --figure 'NAME=REGEX' [--figure ...] SCRIPT [SCRIPT'S OPTIONS ...]

e.g. the scheduler's dispatch throughput before and after a change:

    infra/localstack/start.sh
    uv run python bench/compare.py --baseline 99d45bf \\
        --figure 'jobs/s=dispatch: .* at ([\\d,.]+) jobs/s' dispatch.py --skip-scaling

Each run starts REV's own copy of SCRIPT with REV's interpreter (its own worktree and lock, see
bench/_common.py `baseline_python`), then ours, swapping the order from run to run. Every
`--figure` names a number in the script's output by a regular expression with one group. It
prints each run's figures with the load average, then per figure the median with min and max
over the runs, and the ratio ours / REV taken within each run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from _common import baseline_python, load_average, summary

BENCH = Path(__file__).resolve().parent


def parse_figures(specs: list[str]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"--figure {spec!r}: write NAME=REGEX")
        regex = re.compile(pattern)
        if regex.groups != 1:
            raise SystemExit(f"--figure {spec!r}: the regex needs exactly one group")
        out.append((name, regex))
    return out


def run_script(python: str, script: Path, args: list[str]) -> str:
    done = subprocess.run(
        [python, str(script), *args], cwd=script.parent.parent, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{script} exited with {done.returncode}")
    return done.stdout


def read(output: str, figures: list[tuple[str, re.Pattern[str]]]) -> dict[str, float]:
    got = {}
    for name, regex in figures:
        match = regex.search(output)
        if match is None:
            raise SystemExit(f"figure {name!r}: no match in the output:\n{output}")
        got[name] = float(match.group(1).replace(",", ""))
    return got


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="REV", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--figure", action="append", required=True, metavar="NAME=REGEX")
    parser.add_argument("script", help="a script of bench/, e.g. dispatch.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs: at least 1")
    figures = parse_figures(args.figure)
    base_python = baseline_python(args.baseline)
    base_script = Path(base_python).parent.parent.parent / "bench" / args.script
    plan = [
        (args.baseline, base_python, base_script),
        ("ours", sys.executable, BENCH / args.script),
    ]
    results: dict[str, list[dict[str, float]]] = {args.baseline: [], "ours": []}
    for run in range(args.runs):
        for name, python, script in plan if run % 2 == 0 else plan[::-1]:
            got = read(run_script(python, script, args.script_args), figures)
            results[name].append(got)
            shown = ", ".join(f"{k} {v:,.2f}" for k, v in got.items())
            print(f"run {run + 1} {name}: {shown} ({load_average()})", flush=True)
    print()
    for name, rows in results.items():
        print(f"{name}:")
        for key, _ in figures:
            line = f"    {key:<15} {summary([r[key] for r in rows])}"
            if name == "ours":
                base = results[args.baseline]
                ratios = [r[key] / b[key] for r, b in zip(rows, base, strict=True)]
                line += f"; ratio to {args.baseline}: {summary(ratios)}"
            print(line)
    print(f"(median of {args.runs} runs, min and max; {load_average()})")


if __name__ == "__main__":
    main()
