"""jobs-worker runtime."""
