"""`python -m jobs_worker` is the `jobs-worker` command."""

from jobs_worker.cli import main

# guarded: a spawned handler process imports the parent's __main__ (as __mp_main__)
if __name__ == "__main__":
    main()
