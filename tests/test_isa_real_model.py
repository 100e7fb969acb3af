"""Every instruction-set back end on the default model: the products of real layers bit for bit
against the scalar oracle, and the same greedy tokens with PONDER_ISA forced to another set."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ponder.kernels import isa as ISA
from ponder.kernels import qmatmul as Q

pytestmark = pytest.mark.real_model
FMT = {"Q4_0": Q.FMT_Q4_0, "Q4_1": Q.FMT_Q4_1, "Q8_0": Q.FMT_Q8_0}


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_real_layer_products_match_oracle_on_every_back_end(default_model):
    layer = dict(default_model.weights.layers[0].matrices())
    tensors = [layer["wq"], layer["w_gate"], layer["w_down"], default_model.weights.output]
    assert {t.fmt for t in tensors} == {"Q4_1", "Q8_0"}
    rng = np.random.default_rng(0)
    for t in tensors:
        x = rng.standard_normal((3, t.cols)).astype(np.float32) * 2.0
        ref_w = Q.from_gguf(FMT[t.fmt], t.data, t.rows, t.cols, isa="scalar")
        for bits in (8, 16):
            a = Q.quantize(x, bits=bits)
            ref = Q.matmul_scalar(ref_w, a)
            for isa in ISA.available():
                if isa != "scalar":
                    W = Q.from_gguf(FMT[t.fmt], t.data, t.rows, t.cols, isa=isa)
                    assert same_bits(Q.matmul(W, a), ref), (t.name, bits, isa)


_GREEDY = """
import json, sys
from ponder import Engine, SamplingParams
from ponder.kernels import isa
eng = Engine.from_pretrained(sys.argv[1])
msgs = json.loads(sys.argv[2])
r = eng.generate(msgs, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0]
print(json.dumps({"isa": isa.current(), "tokens": r.token_ids}))
"""


def test_greedy_tokens_with_another_isa_forced(default_engine, default_model_path):
    """The whole forward pass (products, attention, the rest) on a forced 256-bit back end gives
    the same tokens as this process's back end."""
    from ponder import SamplingParams

    other = next((n for n in ("avx2", "portable") if n != ISA.current() and ISA.supported(n)), None)
    if other is None:
        pytest.skip("no other back end to compare with")
    msgs = [{"role": "user", "content": "What is 17 times 23? Think step by step."}]
    want = default_engine.generate(msgs, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))[0].token_ids
    env = dict(os.environ, PONDER_ISA=other)
    r = subprocess.run([sys.executable, "-c", _GREEDY, str(default_model_path), json.dumps(msgs)], env=env,
                       capture_output=True, text=True, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["isa"] == other
    assert got["tokens"] == want
