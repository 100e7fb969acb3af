"""Print the tables of RESULTS.md from a results store.

    python scripts/results_tables.py [RUNS.sqlite]

For each run: accuracy, coverage, tokens; for `sample` runs also coverage@k for
k = 1..n with the unbiased pass@k estimator, from the stored per-sample correctness.
"""

import sys
from collections import defaultdict

from ponder.store import RunStore
from ponder.strategies.voting import pass_at_k


def main(path=None):
    store = RunStore(path)
    runs = sorted(store.runs(), key=lambda r: r["id"])
    print("| run | suite | difficulty | strategy | accuracy | coverage | generated tokens / problem | "
          "tool tokens / problem | saved by reuse / problem | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        s = store.summary(r["id"])
        cfg = s["config"]
        opts = cfg.get("options", {})
        strategy = s["strategy"]
        name = strategy
        if strategy in ("sample", "majority", "adaptive-majority", "best-of-n", "short-m@k", "self-verify", "smc"):
            name += f" n={opts.get('samples')}"
        if strategy == "best-of-n":
            name += f" ({opts.get('select')})"
        if strategy == "short-m@k":
            name += f" m={opts.get('m')}"
        if strategy == "beam":
            name += f" width={opts.get('beam_width')}"
        if strategy == "smc":
            name += f" ({opts.get('potential', 'likelihood')})"
        if cfg.get("tools"):
            name += " --tools " + ",".join(cfg["tools"])
        if cfg.get("shots"):
            name += f" --shots {cfg['shots']}"
            if cfg.get("shot_match", "any") != "any":
                name += f" --shot-match {cfg['shot_match']}"
        n = s["done"] or 1
        print(f"| {r['id']} | {cfg['suite']} | {cfg['difficulty']} | {name} | {100 * s['accuracy']:.1f}% | "
              f"{100 * s['coverage']:.1f}% | {s['generated_tokens'] / n:.1f} | {(s.get('tool_tokens') or 0) / n:.1f} | "
              f"{s['saved_tokens'] / n:.1f} | {s['wall_s']:.0f} |")
    by_category(store, runs)
    for r in runs:
        if r["strategy"] != "sample":
            continue
        per_problem = defaultdict(list)
        for smp in store.samples(r["id"]):
            per_problem[smp["problem_idx"]].append(bool(smp["correct"]))
        k_max = min(len(v) for v in per_problem.values())
        cov = [sum(pass_at_k(len(v), sum(v), k) for v in per_problem.values()) / len(per_problem)
               for k in range(1, k_max + 1)]
        print(f"\ncoverage@k, run {r['id']} (difficulty {r['config']['difficulty']}, {len(per_problem)} problems, "
              f"n = {k_max}):\n")
        print("| k | " + " | ".join(str(k) for k in range(1, k_max + 1)) + " |")
        print("|---|" + "---|" * k_max)
        print("| coverage | " + " | ".join(f"{100 * c:.1f}%" for c in cov) + " |")


def by_category(store, runs):
    """Accuracy per category (the part before "/": add, digit, buy, ...), one table per suite and
    difficulty, one column per run, for the arithmetic and words suites."""
    groups = defaultdict(list)
    for r in runs:
        if r["suite"] in ("arithmetic", "words"):
            groups[(r["suite"], r["difficulty"])].append(r)
    for (suite, d), rs in sorted(groups.items()):
        cells = defaultdict(dict)
        for r in rs:
            for p in store.problems(r["id"]):
                c = cells[(p["category"] or "").split("/")[0]].setdefault(r["id"], [0.0, 0])
                c[0] += p["score"]
                c[1] += 1
        print(f"\naccuracy by category, {suite} difficulty {d} (correct / problems):\n")
        print("| category | " + " | ".join(f"run {r['id']}" for r in rs) + " |")
        print("|---|" + "---|" * len(rs))
        for cat, per in cells.items():
            print(f"| {cat} | " + " | ".join(f"{per[r['id']][0]:.0f}/{per[r['id']][1]}" if r["id"] in per else "-"
                                            for r in rs) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
