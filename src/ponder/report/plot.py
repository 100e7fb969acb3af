"""The accuracy-vs-compute plot: each run a point at (generated tokens per problem, accuracy),
the Pareto front (no other run is both cheaper and more accurate) drawn through them."""

from __future__ import annotations

import os

from ponder.errors import PonderError


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point dominates (fewer or equal tokens and higher accuracy), by tokens."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_runs(summaries: list[dict], path: str) -> str:
    """Write the PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    rows = [s for s in summaries if s["done"]]
    if not rows:
        raise PonderError("none of these runs has a finished problem to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = {}
    points = []
    for s in rows:
        x = s["generated_tokens"] / s["done"]
        y = 100 * s["accuracy"]
        c = colors.setdefault(s["strategy"], f"C{len(colors) % 10}")
        label = s["strategy"] if s["strategy"] not in [t.get_label() for t in ax.collections] else None
        ax.scatter([x], [y], color=c, s=40, zorder=3, label=label)
        if s["coverage"] is not None and s["coverage"] > s["accuracy"]:
            ax.scatter([x], [100 * s["coverage"]], color=c, marker="^", facecolors="none", s=40, zorder=3)
        n = s["config"].get("options", {}).get("samples")
        ax.annotate(f"#{s['id']}" + (f" n={n}" if n and s["strategy"] != "greedy" else ""), (x, y),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
        points.append((x, y))
    front = pareto_front(points)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.4", lw=1, ls="--",
            label="Pareto front", zorder=2)
    if max(p[0] for p in points) / max(min(p[0] for p in points), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("accuracy (%)   (△ coverage)")
    tasks = sorted({f"{s['suite']} d{s['difficulty']}" if s["difficulty"] else s["suite"] for s in rows})
    models = sorted({s["model"] for s in rows})
    ax.set_title(f"{', '.join(tasks)} — {', '.join(models)}", fontsize=9)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
