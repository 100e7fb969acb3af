"""Reports over stored runs: tables for the terminal and the accuracy-vs-compute plot."""

from ponder.report.labels import run_label, task_label
from ponder.report.plot import pareto_front, plot_runs
from ponder.report.selection import select_runs
from ponder.report.tables import runs_table, summary_table

__all__ = ["pareto_front", "plot_runs", "run_label", "runs_table", "select_runs", "summary_table", "task_label"]
