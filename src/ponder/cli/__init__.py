"""The `ponder` command line."""
