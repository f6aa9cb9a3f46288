"""jobs-server."""
