"""How a run is named in tables and plots: its task, its strategy (with its sample count), its date."""

from __future__ import annotations

import os
import time


def run_label(run: dict) -> str:
    """"majority n=16", "best-of-n n=8 verifier +calc 3-shot", "majority n=4 +calc 3-shot cat" (shots of the
    problem's own category), "beam w=2", or "greedy"."""
    c = run["config"]
    options = c.get("options", {})
    label = run["strategy"]
    if label == "beam":
        label += f" w={options['beam_width']}" if options.get("beam_width") else ""
    elif label != "greedy" and options.get("samples"):
        label += f" n={options['samples']}"
    if run["strategy"] == "best-of-n":
        label += f" {options.get('select', 'logprob')}"
    if c.get("tools"):
        label += f" +{','.join(c['tools'])}"
    if c.get("shots"):
        label += f" {c['shots']}-shot" + (" cat" if c.get("shot_match") == "category" else "")
    return label


def task_label(run: dict) -> str:
    """"arithmetic d2" for a procedural suite; a dataset's file name for a JSONL file."""
    suite = run["suite"]
    if suite.endswith((".jsonl", ".json")) or os.sep in suite:
        return os.path.basename(suite)
    return f"{suite} d{run['difficulty']}" if run["difficulty"] is not None else suite


def when(timestamp, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time for people; "?" for one that is missing or out of range."""
    try:
        return time.strftime(fmt, time.localtime(timestamp)) if timestamp is not None else "?"
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"
