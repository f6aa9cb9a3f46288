"""`python -m jobs_worker` is the `jobs-worker` command."""

from jobs_worker.cli import main

main()
