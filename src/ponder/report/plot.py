"""The accuracy-vs-compute plot: each run a point at (generated tokens per problem, accuracy),
the Pareto front (no other run is both cheaper and more accurate) drawn through them.

Readable at a glance: the title names the task, model and date; each point carries only its run
id, placed where it overlaps no other label or point (a leader line when it had to move away);
a table beside the plot says what each run is; the legend sits outside the axes.
"""

from __future__ import annotations

import os

from ponder.errors import PonderError
from ponder.report.labels import run_label, task_label, when

MAX_TABLE_ROWS = 28


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point dominates (fewer or equal tokens and higher accuracy), by tokens."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _model(s: dict) -> str:
    """A model given by path is named by its file (or directory) name."""
    return os.path.basename(s["model"].rstrip("/")) or s["model"]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


# label offsets (points) tried in order: close ones first, then further out with a leader line
_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3.5) for dx, dy in
            ((5, 5), (5, -11), (-5, 5), (-5, -11), (0, 9), (0, -15), (9, -3), (-9, -3))]


def _place_labels(ax, fig, groups: list[tuple[float, float, str]], marker_boxes: list) -> None:
    """Annotate each (x, y, text) at the first offset that overlaps no placed label, marker or the axes edge."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for x, y, text in sorted(groups, key=lambda g: (g[1], g[0]), reverse=True):
        best = None
        for dx, dy in _OFFSETS:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom", zorder=5)
            box = ann.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, frame)
            cost = sum(_overlap(box, b) for b in placed + marker_boxes) + 4 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box, (dx, dy))
            else:
                ann.remove()
            if cost == 0:
                break
        _, ann, box, (dx, dy) = best
        if abs(dx) > 6 or abs(dy) > 12:  # moved away from its point: show which point it names
            ann.remove()
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom", zorder=5,
                              arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 0, "shrinkB": 4})
        placed.append(Bbox(box.get_points()))


def plot_runs(summaries: list[dict], path: str) -> str:
    """Write the PNG; returns its path."""
    fig = figure(summaries)
    import matplotlib.pyplot as plt  # after figure() chose the file-only backend

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path)
    except OSError as e:
        raise PonderError(f"cannot write the plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def figure(summaries: list[dict]):
    """The plot as a matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    rows = sorted((s for s in summaries if s["done"]), key=lambda s: s["id"])
    if not rows:
        raise PonderError("none of these runs has a finished problem to plot")
    fig = plt.figure(figsize=(11.5, 6.2), dpi=110)
    ax = fig.add_axes((0.07, 0.2, 0.54, 0.66))
    side = fig.add_axes((0.64, 0.2, 0.35, 0.66))
    side.axis("off")

    colors: dict[str, str] = {}
    pts = {}
    for s in rows:
        x, y = s["generated_tokens"] / s["done"], 100 * s["accuracy"]
        pts[s["id"]] = (x, y)
        colors.setdefault(s["strategy"], f"C{len(colors) % 10}")
    front = pareto_front(list(pts.values()))
    on_front = {i for i, p in pts.items() if p in front}

    xs = [p[0] for p in pts.values()]
    log = min(xs) > 0 and max(xs) / min(xs) > 20  # a log axis only for wide spreads of positive counts
    for s in rows:
        x, y = pts[s["id"]]
        c = colors[s["strategy"]]
        if s["coverage"] is not None and s["coverage"] > s["accuracy"]:
            cy = 100 * s["coverage"]
            ax.plot([x, x], [y, cy], color=c, lw=0.8, ls=":", zorder=2)
            ax.scatter([x], [cy], marker="^", facecolors="none", edgecolors=c, s=42, lw=1.1, zorder=3)
        ax.scatter([x], [y], color=c, s=46, zorder=4,
                   edgecolors="black" if s["id"] in on_front else "none", linewidths=1.3)

    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        # room around the points, and whole-number ticks (a token count), so no two tick labels read the same
        pad = max(0.12 * (max(xs) - min(xs)), 0.25 * max(xs), 2.0)
        ax.set_xlim(max(0.0, min(xs) - pad), max(xs) + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=3))
    # the front as a staircase, extended to the right edge: everything below-right of it is dominated
    fx = [p[0] for p in front] + [ax.get_xlim()[1]]
    fy = [p[1] for p in front] + [front[-1][1]]
    ax.step(fx, fy, where="post", color="0.25", lw=1.6, ls="--", zorder=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    ax.set_ylim(-4, 106)
    ax.set_xlabel("generated tokens per problem (all samples)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, which="major")

    tasks = sorted({task_label(s) for s in rows})
    models = sorted({_model(s) for s in rows})
    created = [s["created"] for s in rows if s.get("created")]
    days = sorted({when(t, "%Y-%m-%d") for t in created} - {"?"})
    dates = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}" if days else ""
    fig.suptitle(f"Accuracy against compute: {', '.join(tasks)} on {', '.join(models)}", fontsize=12, x=0.07,
                 ha="left", y=0.97)
    problems = sorted({s["done"] for s in rows})
    fig.text(0.07, 0.905, f"{len(rows)} run{'s' if len(rows) > 1 else ''}, "
             f"{'/'.join(map(str, problems))} problems{' each' if len(rows) > 1 else ''}"
             + (f", {dates}" if dates else ""), fontsize=9, color="0.3")

    # labels: one per distinct point ("#3,#7" where runs coincide)
    fig.canvas.draw()
    groups: dict[tuple[float, float], list[int]] = {}
    for i, p in pts.items():
        groups.setdefault(p, []).append(i)
    to_px = ax.transData.transform
    from matplotlib.transforms import Bbox

    marker_boxes = []
    for s in rows:
        px, py = to_px(pts[s["id"]])
        marker_boxes.append(Bbox([[px - 5, py - 5], [px + 5, py + 5]]))
        if s["coverage"] is not None and s["coverage"] > s["accuracy"]:
            cx, cy = to_px((pts[s["id"]][0], 100 * s["coverage"]))
            marker_boxes.append(Bbox([[cx - 5, cy - 5], [cx + 5, cy + 5]]))
    _place_labels(ax, fig, [(x, y, ",".join(f"#{i}" for i in ids)) for (x, y), ids in groups.items()], marker_boxes)

    handles = [Line2D([], [], marker="o", ls="", color=c, label=name) for name, c in colors.items()]
    handles += [Line2D([], [], marker="^", ls="", markerfacecolor="none", markeredgecolor="0.3",
                       label="coverage: any sample correct (above its run)"),
                Line2D([], [], marker="o", ls="--", color="0.25", markerfacecolor="white", markeredgecolor="black",
                       label="Pareto front: no run is cheaper and more accurate")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.11), ncol=3, fontsize=8, frameon=False)

    _side_table(side, rows, pts, colors, on_front, len(models) > 1)
    return fig


def _side_table(side, rows, pts, colors, on_front, show_model: bool) -> None:
    """What each run is: id, strategy and samples, accuracy, coverage, tokens per problem."""
    names = {s["id"]: run_label(s) + (f" ({_model(s)})" if show_model else "") for s in rows}
    w = max(10, *(len(v) for v in names.values())) + 2
    head = f"{'run':>4}  {'strategy':<{w}}{'acc':>6}{'cov':>6}{'tok/prob':>10}"
    side.text(0.0, 1.0, head, family="monospace", fontsize=8, fontweight="bold", va="top", transform=side.transAxes)
    shown = rows if len(rows) <= MAX_TABLE_ROWS else rows[-MAX_TABLE_ROWS:]
    step = min(0.05, 0.95 / (len(shown) + 2))
    for k, s in enumerate(shown, 1):
        cov = "-" if s["coverage"] is None else f"{100 * s['coverage']:.0f}%"
        y = 1.0 - k * step
        side.text(0.0, y, f"{'#' + str(s['id']):>4}", family="monospace", fontsize=8, va="top",
                  color=colors[s["strategy"]], fontweight="bold", transform=side.transAxes)
        line = f"{'':>4}  {names[s['id']]:<{w}}{100 * s['accuracy']:>5.0f}%{cov:>6}{pts[s['id']][0]:>10.0f}"
        side.text(0.0, y, line + ("  front" if s["id"] in on_front else ""), family="monospace", fontsize=8,
                  va="top", transform=side.transAxes)
    if len(shown) < len(rows):
        side.text(0.0, 1.0 - (len(shown) + 1) * step, f"... and {len(rows) - len(shown)} earlier runs",
                  family="monospace", fontsize=8, va="top", transform=side.transAxes, color="0.4")
