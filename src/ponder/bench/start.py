"""`ponder bench start`: warm start to the first token, in fresh processes, against llama-cpp-python.

What a user waits for when they type `ponder generate hi --max-tokens 1`: the interpreter,
the imports, the model load (packed weights and kernels from their caches) and one token.
Each run is a fresh process.  The first of each kind runs untimed: it fills the kernel,
packed-weight and bytecode caches and brings the model file into the page cache, so the
timed runs are warm.  The runs then alternate (ponder, llama.cpp, ponder, ...), so load
on a shared machine falls on both alike.  The yardstick (bench/llama_start.py) is a fresh
`python` that loads the same GGUF with llama-cpp-python and generates one token.

Reported per engine: median and min wall seconds and CPU seconds (user + system, from the
OS), the ratio of the medians (goal: ponder / llama.cpp <= 1.0), the instruction set and
the load average before and after.  PYTHONDONTWRITEBYTECODE is dropped for the children:
users' installs carry their bytecode, and a start that recompiles every module measures
something else.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ponder.errors import PonderError

PROMPT = "hi"


@dataclass
class StartFigure:
    engine: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"engine": self.engine, "wall_median_s": statistics.median(self.wall), "wall_min_s": min(self.wall),
                "cpu_median_s": statistics.median(self.cpu), "cpu_min_s": min(self.cpu),
                "wall_runs": [round(x, 3) for x in self.wall], "cpu_runs": [round(x, 3) for x in self.cpu]}


def ponder_command(model: str, threads: int) -> list[str]:
    return [sys.executable, "-m", "ponder.cli.main", "generate", PROMPT, "--max-tokens", "1",
            "--threads", str(threads), "-m", model]


def llama_command(path: str, threads: int) -> list[str]:
    from ponder.bench import machine

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_start.py")
    return [sys.executable, script, path, str(threads)] + (["--no-extra-bufts"] if machine.cpu_info()["amx"] else [])


def _child_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_process(command: list[str], env: dict) -> tuple[float, float]:
    """Run one fresh process to completion: (wall s, CPU s).  A failed run is an error, not a figure."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise PonderError(f"bench start: `{' '.join(command[1:4])} ...` exited with {proc.returncode}: "
                          + " | ".join(tail))
    return wall, cpu


def run_start(model_name: str, threads: int, vs: str | None, repeats: int) -> dict:
    from datetime import datetime, timezone

    from ponder.bench import machine
    from ponder.kernels import isa
    from ponder.loading import registry

    if repeats < 1:
        raise PonderError("bench start: --repeats must be at least 1")
    path = registry.resolve(model_name)
    if vs:
        try:
            import llama_cpp  # noqa: F401  (only to fail early and clearly)
        except ImportError:
            raise PonderError("--vs llama.cpp needs llama-cpp-python: pip install 'ponder[bench]'") from None
    info = machine.cpu_info()
    commands = {"ponder": ponder_command(model_name, threads)}
    if vs:
        commands["llama.cpp"] = llama_command(path, threads)
    env = _child_env()
    figures = {name: StartFigure(name) for name in commands}
    load_before = os.getloadavg()
    for command in commands.values():  # warm-up: caches filled, file in the page cache
        time_process(command, env)
    for _ in range(repeats):
        for name, command in commands.items():
            wall, cpu = time_process(command, env)
            figures[name].wall.append(wall)
            figures[name].cpu.append(cpu)
    out = {"benchmark": "start", "model": model_name, "file": path, "threads": threads, "cpu": info["name"],
           "vnni": info["vnni"], "amx": info["amx"], "isa": isa.describe(), "repeats": repeats,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "load_average": [round(x, 2) for x in load_before + os.getloadavg()],
           "command": " ".join(["ponder"] + commands["ponder"][3:]),
           "results": [f.to_dict() for f in figures.values()]}
    if vs:
        p, q = out["results"]
        out["ratio_vs_llama_cpp"] = p["wall_median_s"] / q["wall_median_s"]  # <= 1: ponder starts as fast
        out["cpu_ratio_vs_llama_cpp"] = p["cpu_median_s"] / q["cpu_median_s"]
    return out


def print_start(out: dict, console) -> None:
    from rich.table import Table

    la = out["load_average"]
    console.print(f"`{out['command']}` against a fresh python loading the same GGUF with llama-cpp-python and "
                  f"generating one token; fresh processes, alternated, {out['repeats']} timed runs each after an "
                  f"untimed warm-up; load average {la[0]:.1f} before, {la[3]:.1f} after")
    table = Table()
    for col in ("engine", "wall s median", "min", "CPU s median", "min", "wall s, runs in order"):
        table.add_column(col, justify="right")
    for r in out["results"]:
        table.add_row(r["engine"], f"{r['wall_median_s']:.3f}", f"{r['wall_min_s']:.3f}", f"{r['cpu_median_s']:.3f}",
                      f"{r['cpu_min_s']:.3f}", " ".join(f"{x:.2f}" for x in r["wall_runs"]))
    console.print(table)
    if "ratio_vs_llama_cpp" in out:
        console.print(f"[bold]ponder / llama.cpp = {out['ratio_vs_llama_cpp']:.2f}× wall[/bold] "
                      f"({out['cpu_ratio_vs_llama_cpp']:.2f}× CPU; goal ≤ 1.0×)")
