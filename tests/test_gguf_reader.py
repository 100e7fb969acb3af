"""ponder's GGUF reader: the same metadata and tensor infos as the `gguf` package, and a clean
error for every corrupt file of issue 11 (reproduced on the default model), plus a seeded fuzz
of header field edits of the tiny models."""

import os
import struct

import gguf
import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.cli.main import main as cli_main
from ponder.errors import ModelConfigError, ModelFormatError, PonderError
from ponder.loading import gguf_reader
from ponder.loading.model_files import load_model
from tiny_models import random_weights, write_gguf


def _gguf_package_view(path):
    """(metadata, tensor infos) as the gguf package reads them."""
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset), int(t.n_bytes),
                        int(t.n_elements)) for t in r.tensors}
    return meta, tensors


def _as_plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def _assert_same_as_gguf_package(path):
    f = gguf_reader.read(str(path))
    meta, tensors = _gguf_package_view(path)
    assert {k: _as_plain(v) for k, v in f.metadata.items()} == meta
    assert list(f.tensors) == list(tensors)
    mine = {t.name: (t.shape, t.type_id, t.offset, t.n_bytes, t.n_elements) for t in f.tensors.values()}
    assert mine == tensors


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("reader")
    w, cfg = random_weights("llama")
    wq, cfgq = random_weights("qwen2", seed=1)
    return [write_gguf(d / "llama-f32.gguf", w, cfg),
            write_gguf(d / "llama-q41.gguf", w, cfg, fmt="Q4_1", embed_fmt="Q8_0"),
            write_gguf(d / "qwen2-q40.gguf", wq, cfgq, fmt="Q4_0")]


def test_ggml_type_table_matches_gguf_package():
    for type_id, (name, block, size) in gguf_reader.GGML_TYPES.items():
        t = gguf.GGMLQuantizationType(type_id)
        # Q8_1 (never stored in files) is 36 bytes in ggml since its d and s became fp16;
        # the gguf package still lists the old 40
        assert t.name == name and (gguf.GGML_QUANT_SIZES[t] == (block, size) or name == "Q8_1")


def test_same_as_gguf_package_on_tiny_models(tiny_files):
    for path in tiny_files:
        _assert_same_as_gguf_package(path)


@pytest.mark.real_model
@pytest.mark.slow  # the gguf package takes seconds on the 49k-token vocabulary
def test_same_as_gguf_package_on_default_model(default_model_path):
    _assert_same_as_gguf_package(default_model_path)


# --------------------------------------------------------------------------------------
# Issue 11's reproductions: struct.pack(FMT, V) written over one header field of a copy of
# the default model.  Offsets come from the reader's own map of the header.

@pytest.fixture(scope="module")
def default_layout(default_model_path):
    f = gguf_reader.read(default_model_path, record_spans=True)
    return f, {s.label: s for s in f.spans}


def _sparse_copy(src, dst, edits):
    """The header of `src` with `edits` [(offset, fmt, value)] applied, the tensor data left as a hole
    of zeros: these files must fail before any weight is used."""
    f = gguf_reader.read(src)
    with open(src, "rb") as fh:
        head = bytearray(fh.read(f.data_offset))
    for off, fmt, value in edits:
        struct.pack_into(fmt, head, off, value)
    with open(dst, "wb") as out:
        out.write(head)
        out.truncate(f.size)
    return str(dst)


def _edit(layout, tmp_path, label, value, fmt=None):
    span = layout[1][label]
    return _sparse_copy(layout[0].path, tmp_path / "edited.gguf", [(span.offset, fmt or span.fmt, value)])


def _generate_fails_cleanly(path, capsys, *patterns):
    assert cli_main(["generate", "hi", "-m", path, "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ponder: error:") and "Traceback" not in err and path in err
    for p in patterns:
        assert p in err, err
    return err


@pytest.mark.real_model
def test_issue_offsets_are_the_default_models(default_layout):
    spans = default_layout[1]
    assert spans["kv tokenizer.ggml.token_type count"].offset == 763534
    assert spans["kv llama.context_length value"].offset == 522


@pytest.mark.real_model
def test_huge_array_count_fails_fast(default_layout, tmp_path, capsys):
    path = _edit(default_layout, tmp_path, "kv tokenizer.ggml.token_type count", 2 ** 40)
    _generate_fails_cleanly(path, capsys, "tokenizer.ggml.token_type", "truncated or corrupt")


@pytest.mark.real_model
@pytest.mark.parametrize("value", [2 ** 27, 2 ** 32 - 1, 0])
def test_absurd_context_length(default_layout, tmp_path, capsys, value):
    path = _edit(default_layout, tmp_path, "kv llama.context_length value", value)
    _generate_fails_cleanly(path, capsys, "llama.context_length", str(value), "outside the range")


@pytest.mark.real_model
def test_large_context_length_loads_and_costs_only_what_is_used(default_layout, default_engine, tmp_path,
                                                               monkeypatch):
    """2^24 declared positions: accepted (under the bound), with RoPE tables sized by use, and the
    same tokens as the unmodified file."""
    monkeypatch.setenv("PONDER_PACK_CACHE", "0")  # a throwaway copy: no pack to keep
    f, spans = default_layout
    dst = tmp_path / "ctx.gguf"
    with open(f.path, "rb") as src, open(dst, "wb") as out:
        out.write(src.read())
    with open(dst, "r+b") as out:
        out.seek(spans["kv llama.context_length value"].offset)
        out.write(struct.pack("<I", 2 ** 24))
    engine = Engine(load_model(str(dst)), kv_blocks=64)
    assert engine.config.context_length == 2 ** 24
    params = SamplingParams(temperature=0.0, max_tokens=3)
    assert engine.generate("hi", params)[0].token_ids == default_engine.generate("hi", params)[0].token_ids
    assert engine._runner.model.cos.shape[0] <= 1024  # (the runnable model is engine-internal)


@pytest.mark.real_model
@pytest.mark.parametrize("label,value,fmt,words", [
    ("kv llama.attention.head_count value", 0, None, ["head_count", "outside the range"]),
    ("kv llama.block_count value", 0, None, ["block_count", "outside the range"]),
    ("kv llama.attention.layer_norm_rms_epsilon value", float("nan"), None, ["rms_epsilon", "nan"]),
    ("kv llama.rope.freq_base value", -1.0, None, ["freq_base", "-1.0", "outside the range"]),
    ("kv llama.block_count value", 29, None, ["'blk.29.", "not part of the model", "block_count 29"]),
    ("tensor blk.3.ffn_up.weight dim 1", 0, None, ["blk.3.ffn_up.weight", "dimension of 0"]),
])
def test_bad_hyperparameters_and_shapes(default_layout, tmp_path, capsys, label, value, fmt, words):
    _generate_fails_cleanly(_edit(default_layout, tmp_path, label, value, fmt), capsys, *words)


def _tensors_in_file_order(f):
    return sorted(f.tensors.values(), key=lambda t: t.offset)


@pytest.mark.real_model
def test_tensor_type_change_that_overlaps_the_next(default_layout, tmp_path, capsys):
    f, spans = default_layout
    t = next(t for t in _tensors_in_file_order(f)[:-1] if t.type_name == "Q4_1")
    path = _edit(default_layout, tmp_path, f"tensor {t.name} type", 0)  # F32: 6.4x the bytes
    _generate_fails_cleanly(path, capsys, t.name, "overlap")


@pytest.mark.real_model
def test_tensor_offset_aliased_or_misaligned(default_layout, tmp_path, capsys):
    f, spans = default_layout
    a, b = _tensors_in_file_order(f)[3:5]
    alias = _edit(default_layout, tmp_path, f"tensor {b.name} offset", a.offset - f.data_offset)
    _generate_fails_cleanly(alias, capsys, "overlap", a.name, b.name)
    skew = _edit(default_layout, tmp_path, f"tensor {b.name} offset", b.offset - f.data_offset + 4)
    _generate_fails_cleanly(skew, capsys, b.name, "not a multiple of the alignment 32")


@pytest.mark.real_model
def test_invalid_utf8_in_a_token(default_layout, tmp_path, capsys):
    f, spans = default_layout
    length = spans["kv tokenizer.ggml.tokens[1000] length"]
    path = _sparse_copy(f.path, tmp_path / "utf8.gguf", [(length.offset + 8, "<B", 0xFF)])
    _generate_fails_cleanly(path, capsys, "tokenizer.ggml.tokens[1000]", "not valid UTF-8")


def test_non_gguf_file_error_shows_no_content(tmp_path, capsys):
    p = tmp_path / "passwd"
    p.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    err = _generate_fails_cleanly(str(p), capsys, "not a GGUF file")
    assert "root:" not in err.replace(str(p), "") and "b'" not in err


@pytest.mark.parametrize("version", [1, 4])
def test_unsupported_version(tiny_files, tmp_path, version):
    data = bytearray(open(tiny_files[0], "rb").read())
    struct.pack_into("<I", data, 4, version)
    p = tmp_path / "v.gguf"
    p.write_bytes(data)
    with pytest.raises(ModelFormatError, match=f"GGUF version {version} is not supported"):
        load_model(str(p))


def test_tokenizer_and_config_type_errors_are_named(tiny_files, tmp_path):
    f = gguf_reader.read(str(tiny_files[0]), record_spans=True)
    spans = {s.label: s for s in f.spans}
    # block_count stored as a float32 (value type 6) keeps the file parseable
    path = _sparse_copy(f.path, tmp_path / "t.gguf", [(spans["kv llama.block_count type"].offset, "<I", 6)])
    with pytest.raises(ModelConfigError, match="llama.block_count is .*not an integer"):
        load_model(path)
    bos = spans["kv tokenizer.ggml.bos_token_id value"]
    path = _sparse_copy(f.path, tmp_path / "b.gguf", [(bos.offset, "<I", 10 ** 6)])
    with pytest.raises(ModelConfigError, match="bos_token_id 1000000 is not a token id"):
        load_model(path)


# --------------------------------------------------------------------------------------
# Fuzz: random edits of header fields and bytes of the tiny models.  Each must load correctly
# or fail with a PonderError; anything else (a traceback) fails the test.

_INTERESTING = [0, 1, 2, 3, 7, 8, 9, 12, 31, 32, 33, 64, 255, 256, 2 ** 15, 2 ** 16 - 1, 2 ** 24, 2 ** 31 - 1,
                2 ** 31, 2 ** 32 - 1, 2 ** 40, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), float("-inf"), 1e-5]


def _random_value(rng, fmt):
    if fmt in ("<f", "<d"):
        return _FLOATS[rng.integers(len(_FLOATS))]
    size = struct.calcsize(fmt)
    v = _INTERESTING[rng.integers(len(_INTERESTING))] if rng.random() < 0.7 else int(rng.integers(0, 2 ** 31))
    v &= (1 << (8 * size)) - 1
    if fmt[1].islower() and v >= 1 << (8 * size - 1):  # signed
        v -= 1 << (8 * size)
    return v


def test_fuzz_header_edits(tiny_files, tmp_path):
    rng = np.random.default_rng(1234)
    outcomes = {"loaded": 0, "error": 0}
    generated = 0
    for path in tiny_files[:2]:
        f = gguf_reader.read(str(path), record_spans=True)
        original = open(path, "rb").read()
        for i in range(150):
            data = bytearray(original)
            for _ in range(rng.integers(1, 3)):
                if rng.random() < 0.8:
                    span = f.spans[rng.integers(len(f.spans))]
                    struct.pack_into(span.fmt, data, span.offset, _random_value(rng, span.fmt))
                else:  # any byte of the header
                    data[rng.integers(f.data_offset)] = int(rng.integers(256))
            p = tmp_path / f"fuzz{i}.gguf"
            p.write_bytes(data)
            try:
                model = load_model(str(p))
            except PonderError:
                outcomes["error"] += 1
                continue
            outcomes["loaded"] += 1
            if generated < 4:  # a file that loads must also run (bounded: these are slow-ish)
                engine = Engine(model, kv_blocks=16)
                engine.generate([1, 2, 3], SamplingParams(max_tokens=2))
                generated += 1
            os.unlink(p)
    assert outcomes["error"] > 100 and outcomes["loaded"] > 0, outcomes


def test_rope_tables_sized_by_use_have_the_same_bits():
    from ponder.kernels import rope

    full_cos, full_sin = rope.rope_tables(1e5, 64, 5000)
    for n in (1, 256, 777, 4096):
        cos, sin = rope.rope_tables(1e5, 64, n)
        assert np.array_equal(cos, full_cos[:n]) and np.array_equal(sin, full_sin[:n])


def _string_array_bytes(strings: list[bytes], tail: bytes = b"") -> bytes:
    return b"".join(struct.pack("<Q", len(s)) + s for s in strings) + tail


@pytest.mark.parametrize("case", ["short", "empty strings", "one long", "nuls inside", "all long", "truncated"])
def test_string_arrays_in_bulk_are_the_walks(case):
    """The bulk path finds the strings' starts exactly as the walk over their lengths, or steps aside."""
    rng = np.random.default_rng(7)
    strings = [bytes(rng.integers(33, 127, int(rng.integers(1, 12)), dtype=np.uint8)) for _ in range(300)]
    if case == "empty strings":
        strings[10:13] = [b"", b"", b""]
    elif case == "one long":
        strings[150] = b"x" * 300  # a length of 300: its second byte is not zero
    elif case == "nuls inside":
        strings[40] = b"a" + b"\0" * 9 + b"b"
    elif case == "all long":
        strings = [b"y" * 260 for _ in range(20)]
    buf = _string_array_bytes(strings, tail=struct.pack("<Q", 5) + b"after")  # what follows looks like one more
    if case == "truncated":
        buf = buf[: len(buf) // 2]
    walk = gguf_reader._Cursor("m.gguf", buf, len(buf), None)
    bulk = gguf_reader._Cursor("m.gguf", buf, len(buf), None)
    if case == "truncated":
        with pytest.raises(ModelFormatError, match="truncated"):
            gguf_reader._string_array(bulk, len(strings), "kv tokens")
        return
    got = gguf_reader._string_array(bulk, len(strings), "kv tokens")
    want = gguf_reader._strings_one_by_one(walk, len(strings), "kv tokens")
    assert got == want == [s.decode() for s in strings] and bulk.pos == walk.pos
    found = gguf_reader._short_string_starts(buf, 0, len(buf), len(strings))
    if case == "short":
        assert found is not None and found[1] == walk.pos
    if case in ("one long", "all long"):
        assert found is None
