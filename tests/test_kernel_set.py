"""Which kernels a model runs (model/kernel_set.py), and that the native generate path never imports Numba."""

import os
import subprocess
import sys

import gguf
import numpy as np

from ponder import Engine, SamplingParams
from ponder.kernels import native
from ponder.loading.model_files import load_model
from tiny_models import random_weights, write_gguf


def test_each_model_runs_on_one_runtime(default_model, tiny_llama, monkeypatch):
    monkeypatch.setattr(native, "active", True)
    assert Engine(default_model).info().runtime == "native"
    # 8-bit activations are quantized by Numba's kernels, which then run on one thread beside the pool
    assert Engine(default_model, activation_bits=8).info().runtime == "native+numba"
    assert Engine(load_model(str(tiny_llama[2]))).info().runtime == "numba"   # float weights
    monkeypatch.setattr(native, "active", False)
    assert Engine(default_model).info().runtime == "numba"


def test_a_numba_model_keeps_its_quantized_products_off_the_pool(tmp_path, monkeypatch):
    """A quantized model with a float output head runs on Numba, its quantized products too: two thread
    pools never take turns on the cores.  The same tokens as with the runtime off."""
    w, cfg = random_weights("llama", dim=128, n_heads=2, n_kv_heads=1, tied=False)
    head = (np.ascontiguousarray(w["lm_head.weight"], np.float32), gguf.GGMLQuantizationType.F32)
    model = load_model(str(write_gguf(tmp_path / "mixed.gguf", w, cfg, fmt="Q8_0", overrides={"output.weight": head})))
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    monkeypatch.setattr(native, "active", False)
    want = Engine(model).generate("a b", params)[0].outputs[0].token_ids
    monkeypatch.setattr(native, "active", True)
    engine = Engine(model)
    assert engine.info().runtime == "numba"
    from ponder.kernels import qmm_native

    def refuse(*args):
        raise AssertionError("a quantized product of a Numba model ran on the native pool")

    monkeypatch.setattr(qmm_native, "linear16", refuse)
    assert engine.generate("a b", params)[0].outputs[0].token_ids == want


def test_native_generate_never_imports_numba(default_model_path):
    code = ("import sys\nfrom ponder.cli.main import main\n"
            "sys.argv = ['ponder', 'generate', 'hi', '--max-tokens', '2', '--seed', '0']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('NUMBA' if 'numba' in sys.modules else 'NO-NUMBA', file=sys.stderr)\n")
    env = dict(os.environ)
    env.pop("PONDER_NATIVE", None)   # the default
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "NO-NUMBA", r.stderr
