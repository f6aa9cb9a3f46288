"""jobs-sdk."""
