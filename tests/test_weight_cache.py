"""The packed-weight cache: used, invalidated when the model file or the layout changes, and a
corrupt cache file rebuilt, never trusted.  Hits must give the same bits as a fresh pack."""

import json
import os
import struct

import numpy as np
import pytest

from ponder.loading.model_files import load_model
from ponder.loading.weights import file_mapping
from ponder.model import weight_cache
from ponder.model.fast_model import FastModel, StepInput
from tiny_models import random_weights, write_gguf


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weight_cache, "MIN_BYTES", 0)  # the tiny model's pack is a few KB
    return tmp_path


@pytest.fixture
def q41_model(cache_home):
    w, cfg = random_weights("llama", dim=64, ffn=128, n_heads=1, n_kv_heads=1)
    return write_gguf(cache_home / "q41.gguf", w, cfg, fmt="Q4_1", embed_fmt="Q8_0")


def _logits(runner: FastModel) -> np.ndarray:
    c = runner.config
    tokens = np.array([5, 9, 7], np.int64)
    blocks, bs = 4, 16
    k_pool = np.zeros((c.n_layers, blocks, c.n_kv_heads, c.head_dim, bs), np.float32)
    v_pool = np.zeros((c.n_layers, blocks, c.n_kv_heads, bs, c.head_dim), np.float32)
    step = StepInput(tokens, np.arange(3), np.zeros(3, np.int64), np.arange(blocks, dtype=np.int32)[None, :],
                     np.arange(3))
    return runner.forward(step, k_pool, v_pool)


def _runner(path) -> FastModel:
    return FastModel(load_model(str(path)).weights)


def _cache_files(home):
    d = home / "home" / "packed"
    return sorted(d.iterdir()) if d.exists() else []


def test_cache_is_written_then_used_with_the_same_bits(q41_model, cache_home):
    first = _runner(q41_model)
    assert first.pack_cache == "empty"
    files = _cache_files(cache_home)
    assert len(files) == 1 and weight_cache.layout_id() in files[0].name
    second = _runner(q41_model)
    assert second.pack_cache == "hit"
    # the packed buffers are the cache file's pages, not copies
    assert file_mapping(second.output.packed.buf) is not None
    assert second.output.packed.buf.flags.writeable
    assert np.array_equal(_logits(first), _logits(second))
    assert np.array_equal(first.layers[1].qkv.parts[0].packed.buf, second.layers[1].qkv.parts[0].packed.buf)


def test_cache_off(q41_model, cache_home, monkeypatch):
    monkeypatch.setenv("PONDER_PACK_CACHE", "0")
    assert _runner(q41_model).pack_cache == "off"
    assert _cache_files(cache_home) == []


def test_invalidated_when_the_model_file_changes(q41_model, cache_home):
    _runner(q41_model)
    w, cfg = random_weights("llama", dim=64, ffn=128, n_heads=1, n_kv_heads=1, seed=7)
    write_gguf(q41_model, w, cfg, fmt="Q4_1", embed_fmt="Q8_0")  # same path, same size, new weights
    changed = _runner(q41_model)
    assert changed.pack_cache == "stale"
    fresh = FastModel(load_model(str(q41_model)).weights)
    assert fresh.pack_cache == "hit"  # the stale file was replaced
    os.environ["PONDER_PACK_CACHE"] = "0"
    try:
        uncached = _runner(q41_model)
    finally:
        del os.environ["PONDER_PACK_CACHE"]
    assert np.array_equal(_logits(changed), _logits(uncached)) and np.array_equal(_logits(fresh), _logits(uncached))


def test_invalidated_when_only_the_mtime_changes(q41_model, cache_home):
    _runner(q41_model)
    st = os.stat(q41_model)
    os.utime(q41_model, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert _runner(q41_model).pack_cache == "stale"


def test_a_layout_change_never_reads_the_old_pack(q41_model, cache_home, monkeypatch):
    _runner(q41_model)
    monkeypatch.setattr(weight_cache, "layout_id", lambda: "rows99.v9")
    other = _runner(q41_model)
    assert other.pack_cache == "empty"
    assert len(_cache_files(cache_home)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_data", "flip_index", "garbage"])
def test_corrupt_cache_file_is_rebuilt(q41_model, cache_home, damage):
    good = _logits(_runner(q41_model))
    (path,) = _cache_files(cache_home)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-100]
    elif damage == "flip_data":
        data[-50] ^= 0x10
    elif damage == "flip_index":
        at = data.index(b'"layout"')
        data[at + 2] ^= 0x01
    else:
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))
    rebuilt = _runner(q41_model)
    assert rebuilt.pack_cache in ("corrupt", "stale")
    assert np.array_equal(_logits(rebuilt), good)
    again = _runner(q41_model)
    assert again.pack_cache == "hit" and np.array_equal(_logits(again), good)


def test_gguf_tensors_are_file_mappings_so_their_pages_can_be_released(q41_model):
    """FastModel drops the file's pages once packed (release_pages): that needs the map behind each tensor."""
    w = load_model(str(q41_model)).weights
    assert file_mapping(w.embed.data) is not None and file_mapping(w.layers[0].wv.data) is not None


@pytest.mark.parametrize("renamed", ["ponder.kernels.no_such_module:QMatrix", "ponder.kernels.qmm_layout:Gone",
                                     "os.path:join"])
def test_a_pack_naming_a_type_that_is_gone_is_rebuilt(q41_model, cache_home, renamed):
    """A pack written by other code (a packed type renamed or moved since) is rebuilt, not a crash."""
    good = _logits(_runner(q41_model))
    (path,) = _cache_files(cache_home)
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 12)
    index = json.loads(data[20:20 + n])
    for entry in index["entries"].values():
        entry["class"] = renamed
    blob = json.dumps(index).encode()
    assert 20 + len(blob) <= index["data_offset"]
    head = data[:8] + struct.pack("<IQ", struct.unpack_from("<I", data, 8)[0], len(blob)) + blob
    path.write_bytes(head + b"\0" * (index["data_offset"] - len(head)) + data[index["data_offset"]:])
    rebuilt = _runner(q41_model)
    assert rebuilt.pack_cache == "corrupt" and np.array_equal(_logits(rebuilt), good)
    assert _runner(q41_model).pack_cache == "hit"


def test_checksum_by_chunks_is_the_whole_arrays_sum_and_xor():
    import warnings

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 8 * (3 * weight_cache._CHUNK_WORDS + 5), dtype=np.uint8)  # a partial last chunk
    words = data.view(np.uint64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sum wraps many times: silently, as the one reduction does
        got = weight_cache.checksum(data)
    assert got == [int(np.add.reduce(words, dtype=np.uint64)), int(np.bitwise_xor.reduce(words))]


def _anonymous_kb(buf: np.ndarray) -> int | None:
    """Anonymous memory (pages copied on write) of the mapping holding buf, from /proc/self/smaps (None
    off Linux)."""
    try:
        text = open("/proc/self/smaps").read()
    except OSError:
        return None
    addr = buf.__array_interface__["data"][0]
    inside = False
    for line in text.splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and head == "Anonymous:":
            return int(line.split()[1])
    return None


def test_a_loaded_pack_shares_the_page_cache_instead_of_copying(q41_model, cache_home):
    """The pack is mapped private and writable, but read: its pages are the page cache's, none copied."""
    _runner(q41_model)
    hit = _runner(q41_model)
    assert hit.pack_cache == "hit"
    copied = _anonymous_kb(hit.output.packed.buf)
    if copied is None:
        pytest.skip("no /proc/self/smaps")
    assert copied == 0


def test_atomic_writes_take_the_users_umask(tmp_path):
    """A cache file is readable by whoever the user's umask allows (mkstemp's 0600 would hide a shared
    $PONDER_HOME from other users), and no temporary file is left behind."""
    import os

    from ponder.model.weight_cache import write_atomic

    old = os.umask(0o022)
    try:
        assert write_atomic(str(tmp_path / "sub" / "f.bin"), [b"abc", b"def"])
        path = tmp_path / "sub" / "f.bin"
        assert path.read_bytes() == b"abcdef"
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_atomic(str(path), [b"x"])
        assert path.read_bytes() == b"x" and path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert os.listdir(tmp_path / "sub") == ["f.bin"]
