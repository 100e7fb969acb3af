"""The results store: every run, problem and sample in one SQLite file ($PONDER_HOME/runs.sqlite)."""

from ponder.store.runs import RunStore, StoreError, default_path

__all__ = ["RunStore", "StoreError", "default_path"]
