"""Reports over stored runs: tables for the terminal and the accuracy-vs-compute plot."""

from ponder.report.plot import pareto_front, plot_runs
from ponder.report.tables import runs_table, summary_table

__all__ = ["pareto_front", "plot_runs", "runs_table", "summary_table"]
