"""A CPython builtin, emitted as IR, that calls an entry: the per-call cost of a C extension without one.

    call(entry, state, threads, *words)  ->  True

Each word is a Python int (its value), a NumPy ndarray (its data address, read from the
array object as NumPy's C API does: PyArrayObject's `data` field), or a float: a Python float
or numpy.float64 (PyFloat_AsDouble) or a numpy.float32 (its value, read from the scalar object:
PyFloat32ScalarObject's `obval`, widened exactly), as the IEEE bits of the double (the IR side
bitcasts the word back, and rounds to float32 where its kernel takes one).  The builtin puts
them in an argument vector on its stack and calls entry(state, argv, threads).  Anything else
is a TypeError.  Through ctypes a product cost ~4 us more per call (ndarray.ctypes or
c_char.from_buffer for each address, struct packing, the lock, the foreign call); a
METH_FASTCALL builtin costs what any builtin call costs.  It holds the GIL while the entry
runs (as the Numba kernels do), which also serializes calls from several Python threads.

The layout it reads (ob_type at 8, PyArrayObject.data and the float32 scalar's value at 16) is that of every non-debug
CPython 3 and NumPy 1.x/2.x; bind.py checks it once at load with a known array and falls
back to ctypes if it does not hold.  The Python version is part of the pool unit's key.
"""

from __future__ import annotations

from llvmlite import ir

from ponder.kernels.llvm_ir import c64, emit_loop

MAX_WORDS = 64
METH_FASTCALL = 0x80
# Globals the loader sets to id() of these objects.  Not resolved as C symbols: Numba maps some of
# those names (PyExc_TypeError, ...) to other addresses in the process's JIT symbol table.
# A string names an attribute of numpy (bind.py imports NumPy; this module need not).
OBJECTS = {"ponder_int_type": int, "ponder_ndarray_type": "ndarray", "ponder_type_error": TypeError,
           "ponder_float_type": float, "ponder_f64_type": "float64", "ponder_f32_type": "float32"}

_i8, _i32, _i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_p = _i8.as_pointer()


def emit(mod: ir.Module) -> None:
    """Add py_call (a METH_FASTCALL function), its probe and the OBJECTS globals to mod."""
    as_ll = ir.Function(mod, ir.FunctionType(_i64, [_p]), "PyLong_AsLongLong")
    as_double = ir.Function(mod, ir.FunctionType(ir.DoubleType(), [_p]), "PyFloat_AsDouble")
    occurred = ir.Function(mod, ir.FunctionType(_p, []), "PyErr_Occurred")
    from_long = ir.Function(mod, ir.FunctionType(_p, [_i64]), "PyBool_FromLong")
    set_string = ir.Function(mod, ir.FunctionType(ir.VoidType(), [_p, _p]), "PyErr_SetString")
    objs = {}
    for name in OBJECTS:
        objs[name] = ir.GlobalVariable(mod, _i64, name)
        objs[name].initializer = c64(0)
    text = b"native call: a word is not an int, a float or a numpy.ndarray, or there are too many\0"
    msg = ir.GlobalVariable(mod, ir.ArrayType(_i8, len(text)), "ponder_py_call_msg")
    msg.initializer = ir.Constant(ir.ArrayType(_i8, len(text)), bytearray(text))
    msg.global_constant = True

    i64p = _i64.as_pointer()
    entry_ty = ir.FunctionType(ir.VoidType(), [i64p, i64p, _i64])
    f = ir.Function(mod, ir.FunctionType(_p, [_p, _p.as_pointer(), _i64]), "py_call")
    _, args, nargs = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    argv = b.alloca(ir.ArrayType(_i64, MAX_WORDS))
    fail, check, head, body, call, int_err, store = (f.append_basic_block(n) for n in (
        "fail", "check", "head", "body", "call", "int_err", "store"))
    null = ir.Constant(_p, None)

    def type_of(obj):
        return b.load(b.inttoptr(b.add(b.ptrtoint(obj, _i64), c64(8)), _p.as_pointer()))

    def field(obj, ty):   # the word at offset 16 of an object, as a ty
        return b.load(b.inttoptr(b.add(b.ptrtoint(obj, _i64), c64(16)), ty.as_pointer()))

    def int_at(k):
        return b.call(as_ll, [b.load(b.gep(args, [c64(k)]))])

    ok = b.and_(b.icmp_signed(">=", nargs, c64(3)), b.icmp_signed("<=", nargs, c64(3 + MAX_WORDS)))
    b.cbranch(ok, check, fail)

    b.position_at_end(fail)
    b.call(set_string, [b.inttoptr(b.load(objs["ponder_type_error"]), _p), b.bitcast(msg, _p)])
    b.ret(null)

    b.position_at_end(check)
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(_i64)
    i.add_incoming(c64(3), check)
    b.cbranch(b.icmp_signed("<", i, nargs), body, call)
    b.position_at_end(body)
    obj = b.load(b.gep(args, [i]))
    ty = b.ptrtoint(type_of(obj), _i64)
    words = []   # (value, block) for the store's phi

    def case(types, name, read):
        """If obj's type is one of types: its word is read(); else fall through to the next case."""
        yes, no = f.append_basic_block(name), f.append_basic_block(f"not_{name}")
        hit = None
        for t in types:
            eq = b.icmp_unsigned("==", ty, b.load(objs[t]))
            hit = eq if hit is None else b.or_(hit, eq)
        b.cbranch(hit, yes, no)
        b.position_at_end(yes)
        v = read()
        if v is not None:
            words.append((v, b.block))
            b.branch(store)
        b.position_at_end(no)

    def read_int():
        v = b.call(as_ll, [obj])
        ok = f.append_basic_block("int_ok")
        b.cbranch(b.and_(b.icmp_signed("==", v, c64(-1)), b.icmp_unsigned("!=", b.call(occurred, []), null)),
                  int_err, ok)
        b.position_at_end(ok)
        return v
    case(["ponder_int_type"], "int", read_int)
    case(["ponder_ndarray_type"], "array", lambda: field(obj, _i64))
    # float and its subclass numpy.float64: no error is possible
    case(["ponder_float_type", "ponder_f64_type"], "float", lambda: b.bitcast(b.call(as_double, [obj]), _i64))
    case(["ponder_f32_type"], "f32", lambda: b.bitcast(b.fpext(field(obj, ir.FloatType()), ir.DoubleType()), _i64))
    b.branch(fail)

    b.position_at_end(int_err)
    b.ret(null)   # the int's OverflowError stands
    b.position_at_end(store)
    v = b.phi(_i64)
    for val, blk in words:
        v.add_incoming(val, blk)
    b.store(v, b.gep(argv, [c64(0), b.sub(i, c64(3))]))
    i.add_incoming(b.add(i, c64(1)), store)
    b.branch(head)

    b.position_at_end(call)   # the three leading ints are plain Python ints (checked by the caller's code)
    fn = b.inttoptr(int_at(0), entry_ty.as_pointer())
    b.call(fn, [b.inttoptr(int_at(1), i64p), b.gep(argv, [c64(0), c64(0)]), int_at(2)])
    b.ret(b.call(from_long, [c64(1)]))

    # probe(out, argv, n): out[:n] = argv[:n], an entry for the loader's one check of the layout
    g = ir.Function(mod, entry_ty, "py_call_probe")
    out, av, n = g.args
    b = ir.IRBuilder(g.append_basic_block("entry"))

    def copy(k):
        b.store(b.load(b.gep(av, [k])), b.gep(out, [k]))
    emit_loop(b, c64(0), n, "copy", copy)
    b.ret_void()
