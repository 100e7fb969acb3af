"""What goes into a native object, and compiling it: llvmlite alone, no Numba.

An object is built per *unit*:

* "pool": the thread pool (pool.py) and the CPython call bridge (pycall.py), the same for every
  instruction set;
* "ops": the forward pass's serial kernels and the sampler's (ops_emit.py), entries that run on
  the calling thread; ISA-free IR, compiled for the host CPU like the others;
* "<isa>" (an instruction set of kernels/isa): its kernels, every variant at once: the products
  for every weight format x activation width (qmm_emit.emit_item, and the entries that run a
  product's jobs: qmm_emit.emit_entry; they call the pool unit's pool_run) and the two activation
  quantizers (act_quant_emit; the same IR for every set, compiled into each set's object so
  that an object holds all a product needs).  Every variant, because they compile in about a second together
  (see BENCHMARKS.md) and a model file can hold several formats: deciding from the model would
  buy little and make a second model recompile;
* "attention_<isa>_d<d>_bs<bs>": paged attention for one head dim and KV block size
  (attention_job_emit: the item that runs one job of the plan, and the entry that runs the
  plan's jobs on the pool), compiled on first use of that shape: one model needs one.

Each is one llvmlite module, verified, optimized at O3 for this host's CPU and features (or
NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set, as Numba does, to build for an older CPU) and
emitted as an object file.  No fast-math flag is ever set: the float sequences are the contract.
key() is what the object depends on; cache.py stores objects under it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import sys

_KERNELS = pathlib.Path(__file__).resolve().parent.parent
# the sources whose code ends up in an object (the emitters and what they read)
_SOURCES = ("qmm_emit.py", "qmm_layout.py", "act_quant_emit.py", "act_quant.py", "llvm_ir.py", "attention_emit.py",
            "attention_job_emit.py", "ops_emit.py")


def _llvm():
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def cpu() -> tuple[str, str]:
    """(CPU name, feature string) the objects are compiled for."""
    llvm = _llvm()
    name = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    feats = os.environ.get("NUMBA_CPU_FEATURES")
    if feats is None:
        try:
            feats = llvm.get_host_cpu_features().flatten()
        except RuntimeError:   # LLVM cannot tell on some hosts: the CPU name alone
            feats = ""
    return name, feats


def source_hash() -> str:
    """A hash of every source file an object's code comes from."""
    h = hashlib.sha256()
    paths = [_KERNELS / n for n in _SOURCES] + sorted((_KERNELS / "isa").glob("*.py")) + \
        sorted((_KERNELS / "native").glob("*.py"))
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def key(unit: str) -> dict:
    """Everything a unit's object depends on: a cached object is used only under an equal key."""
    import llvmlite

    name, feats = cpu()
    return {"unit": unit, "cpu": name, "features": feats, "triple": _llvm().get_process_triple(),
            "os": sys.platform, "machine": platform.machine(), "llvmlite": llvmlite.__version__,
            "python": platform.python_implementation() + ".".join(map(str, sys.version_info[:2])),
            "sources": source_hash()}


def _module(unit: str, triple: str):
    from llvmlite import ir

    from ponder.kernels import isa

    mod = ir.Module(f"ponder_{unit}")
    mod.triple = triple
    if unit == "pool":
        from ponder.kernels.native import pool, pycall

        pool.emit(mod, triple)
        pycall.emit(mod)
        return mod
    if unit == "ops":
        from ponder.kernels import ops_emit

        ops_emit.emit(mod)
        return mod
    from ponder.kernels import attention_emit, attention_job_emit

    shape = attention_job_emit.parse_unit(unit)
    if shape is not None:
        be = isa.backend(shape[0]) if shape[0] in isa.NAMES else None
        if be is None or not attention_emit.supports(be, shape[1], shape[2]):
            raise ValueError(f"{unit!r} has no native attention kernel")
        attention_job_emit.emit(mod, be, shape[1], shape[2])
        return mod
    from ponder.kernels import act_quant_emit, qmm_emit
    from ponder.kernels.qmm_layout import FMT_NAMES

    be = isa.backend(unit)
    if be is None:
        raise ValueError(f"{unit!r} has no native kernels")
    quant16 = act_quant_emit.emit_item(mod, 16, unit)
    act_quant_emit.emit_item(mod, 8, unit)
    for fmt in FMT_NAMES:
        for bits in (8, 16):
            qmm_emit.emit_item(mod, be, fmt, bits)
            qmm_emit.emit_entry(mod, be, fmt, bits, False, None)
        qmm_emit.emit_entry(mod, be, fmt, 16, True, quant16)
    return mod


def compile_unit(unit: str) -> bytes:
    """The object code of a unit, compiled now."""
    llvm = _llvm()
    triple = llvm.get_process_triple()
    mod = _module(unit, triple)
    name, feats = cpu()
    tm = llvm.Target.from_triple(triple).create_target_machine(cpu=name, features=feats, opt=3)
    m = llvm.parse_assembly(str(mod))
    m.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(m, pb)
    return tm.emit_object(m)
