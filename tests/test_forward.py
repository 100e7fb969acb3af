"""The fast forward pass against the float64 reference, on tiny random models in every format."""

import numpy as np
import pytest

from ponder.engine.kv_cache import KVCache
from ponder.loading.model_files import load_model
from ponder.model.fast_model import FastModel, StepInput
from ponder.model.reference import ReferenceModel
from tiny_models import random_weights, write_gguf, write_hf

TOKENS = [1, 40, 72, 260, 223, 268, 5, 99, 150, 42, 17, 3, 8, 200, 211, 260, 273, 30, 31, 64, 2, 7, 9]


def fast_logits(model, tokens, chunks=None, block_size=16):
    """All-position logits from the fast path, prefilled in the given chunk sizes."""
    fm = FastModel(model.weights)
    kv = KVCache(model.config.n_layers, model.config.n_kv_heads, model.config.head_dim, 16, block_size)
    tables = np.arange(16, dtype=np.int32)[None, :]
    out, start = [], 0
    for n in chunks or [len(tokens)]:
        step = StepInput(np.array(tokens[start:start + n]), np.arange(start, start + n), np.zeros(n, np.int32),
                         tables, np.arange(n))
        out.append(fm.forward(step, kv.k, kv.v))
        start += n
    return np.concatenate(out)


def reference_logits(model, tokens):
    ref = ReferenceModel(model.weights)
    return ref.forward(tokens, ref.new_cache())


# (format, tolerance on max|fast - ref| / max|ref|).  Float weights run float32
# products; quantized weights run the integer path with 15-bit activations.
FORMATS = [("F32", 1e-4), ("F16", 1e-4), ("BF16", 1e-4), ("Q8_0", 2e-3), ("Q4_0", 2e-3), ("Q4_1", 2e-3)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("fmt,tol", FORMATS)
def test_fast_matches_reference_gguf(tmp_path, arch, fmt, tol):
    w, cfg = random_weights(arch, seed=3)
    model = load_model(str(write_gguf(tmp_path / "m.gguf", w, cfg, fmt=fmt, embed_fmt="Q8_0" if fmt[0] == "Q" else None)))
    fast, ref = fast_logits(model, TOKENS), reference_logits(model, TOKENS)
    err = np.abs(fast - ref).max() / np.abs(ref).max()
    assert err < tol, f"relative error {err:.2e}"
    assert (fast.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_fast_matches_reference_safetensors(tmp_path, dtype):
    w, cfg = random_weights("qwen2", seed=4, tied=False)
    model = load_model(write_hf(str(tmp_path / "hf"), w, cfg, dtype=dtype))
    assert not model.weights.tied
    fast, ref = fast_logits(model, TOKENS), reference_logits(model, TOKENS)
    assert np.abs(fast - ref).max() / np.abs(ref).max() < 1e-4


def test_gguf_and_hf_copies_are_the_same_model(tiny_llama):
    """The GGUF writer permutes Q/K rows as llama.cpp does; loading must undo it."""
    _, _, gguf_path, hf_dir = tiny_llama
    a = reference_logits(load_model(str(gguf_path)), TOKENS)
    b = reference_logits(load_model(hf_dir), TOKENS)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * np.abs(a).max())


def test_reference_incremental_equals_whole(tmp_path):
    w, cfg = random_weights("llama", seed=5)
    model = load_model(str(write_gguf(tmp_path / "m.gguf", w, cfg)))
    ref = ReferenceModel(model.weights)
    cache = ref.new_cache()
    parts = [ref.forward(TOKENS[:10], cache), ref.forward(TOKENS[10:11], cache), ref.forward(TOKENS[11:], cache)]
    np.testing.assert_allclose(np.concatenate(parts), reference_logits(model, TOKENS), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("fmt", ["Q4_1", "F16"])
def test_chunked_prefill_is_bit_identical(tmp_path, fmt):
    w, cfg = random_weights("llama", seed=6)
    model = load_model(str(write_gguf(tmp_path / "m.gguf", w, cfg, fmt=fmt)))
    whole = fast_logits(model, TOKENS)
    for chunks in ([1] * len(TOKENS), [16, 7], [5, 5, 5, 5, 3]):
        np.testing.assert_array_equal(fast_logits(model, TOKENS, chunks), whole)
