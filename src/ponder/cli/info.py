"""`ponder info`: what this installation runs on, without loading a model.

Version, instruction set and kernel back end, threads, where Numba keeps the compiled
kernels and how much is there, PONDER_HOME and the models cached in it.
"""

from __future__ import annotations

import glob
import os
import platform


def _dir_bytes(path: str, patterns=("*",)) -> tuple[int, int]:
    """(files, bytes) matching the patterns under path, recursively."""
    files = total = 0
    for pat in patterns:
        for f in glob.glob(os.path.join(path, "**", pat), recursive=True):
            if os.path.isfile(f):
                files += 1
                total += os.path.getsize(f)
    return files, total


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> tuple[str, str]:
    """(instruction set, kernel back end) the integer kernels run on."""
    from ponder.kernels import isa

    name = isa.current()
    if name == "scalar":
        return isa.describe(), "plain Numba (the scalar oracle)"
    return isa.describe(), f"LLVM IR kernels for {name} (ponder.kernels.isa.{name}, {isa.lanes(name)} rows per vector)"


def kernel_cache_dir() -> str:
    """Where Numba writes ponder's compiled kernels (cache=True), found the way Numba finds it."""
    import ponder.kernels

    src = os.path.join(os.path.dirname(ponder.kernels.__file__), "ops.py")
    try:
        from numba.core.caching import _CacheImpl

        for locator in _CacheImpl._locator_classes:
            loc = locator.from_function(_probe, src)
            if loc is not None:
                return loc.get_cache_path()
    except Exception:  # a private Numba API: fall back to its documented rules
        pass
    from numba.core import config

    return config.CACHE_DIR or os.path.join(os.path.dirname(src), "__pycache__")


def _probe():  # pragma: no cover  (never called: stands in for a kernel when asking Numba where it caches)
    pass


def gather() -> dict:
    import numba
    import numpy

    from ponder import __version__
    from ponder.kernels import KERNEL_VERSION
    from ponder.loading import registry

    isa_name, backend = _isa()
    cache = kernel_cache_dir()
    n_files, n_bytes = _dir_bytes(cache, ("*.nbi", "*.nbc"))
    models = []
    for row in registry.list_models():
        size = None
        if row["path"]:
            size = os.path.getsize(row["path"]) if os.path.isfile(row["path"]) else _dir_bytes(row["path"])[1]
        models.append({"name": row["name"], "path": row["path"], "bytes": size})
    return {
        "ponder": __version__,
        "kernel_version": KERNEL_VERSION,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "isa": isa_name,
        "kernel_backend": backend,
        "threads": numba.config.NUMBA_NUM_THREADS,
        "kernel_cache": cache,
        "kernel_cache_files": n_files,
        "kernel_cache_bytes": n_bytes,
        "ponder_home": registry.ponder_home(),
        "models": models,
    }


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def run(args) -> int:
    """The `ponder info` command."""
    import json

    info = gather()
    if args.json:
        print(json.dumps(info))
        return 0
    rows = [
        ("ponder", f"{info['ponder']} (kernels v{info['kernel_version']}; Python {info['python']}, "
                   f"NumPy {info['numpy']}, Numba {info['numba']})"),
        ("cpu", f"{info['cpu']} ({info['cores']} logical cores)"),
        ("instruction set", info["isa"]),
        ("kernel back end", info["kernel_backend"]),
        ("threads", f"{info['threads']} (--threads, or NUMBA_NUM_THREADS)"),
        ("kernel cache", f"{info['kernel_cache']} ({info['kernel_cache_files']} files, "
                         f"{_mb(info['kernel_cache_bytes'])})"),
        ("home", f"{info['ponder_home']} (PONDER_HOME)"),
    ]
    for m in info["models"]:
        where = f"{m['path']} ({_mb(m['bytes'])})" if m["path"] else f"not cached (`ponder pull {m['name']}`)"
        rows.append((f"model {m['name']}", where))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0

