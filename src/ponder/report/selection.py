"""Which runs a report covers when none are named: the latest run and the other runs of its task,
or the N latest runs."""

from __future__ import annotations

from ponder.errors import InvalidParameterError, PonderError


def select_runs(runs: list[dict], ids: list[int], last: int | None, store_path: str) -> list[int]:
    """Run ids in ascending order.  `runs` is the store's listing (newest first)."""
    if ids and last is not None:
        raise InvalidParameterError("give run ids or --last N, not both", "last")
    if ids:
        return list(dict.fromkeys(ids))
    if last is not None:
        if last < 1:
            raise InvalidParameterError(f"--last must be at least 1 (got {last})", "last")
        chosen = [r["id"] for r in runs if "damaged" not in r][:last]
    else:
        usable = [r for r in runs if "damaged" not in r and r["done"]]
        if not usable:
            raise PonderError(f"no run in {store_path} has a finished problem yet (start one with `ponder run`)")
        latest = usable[0]
        task = (latest["suite"], latest["difficulty"])
        chosen = [r["id"] for r in usable if (r["suite"], r["difficulty"]) == task]
    if not chosen:
        raise PonderError(f"no runs in {store_path} (start one with `ponder run`)")
    return sorted(chosen)
