"""Every bad model input gets a specific ponder error that names the problem."""

import gguf
import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.cli.main import main as cli_main
from ponder.errors import (ContextLengthError, ModelConfigError, ModelFormatError, ModelNotFoundError, TensorShapeError,
                           UnsupportedArchitectureError, UnsupportedTensorTypeError)
from ponder.loading.model_files import load_model
from tiny_models import random_weights, write_gguf, write_hf


def test_missing_file():
    with pytest.raises(ModelNotFoundError, match="no such model file"):
        load_model("/nonexistent/model.gguf")


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        load_model("not-a-model")


def test_wrong_magic(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGML" + b"\0" * 100)
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        load_model(str(p))


def test_truncated_file(tiny_llama, tmp_path):
    data = open(tiny_llama[2], "rb").read()
    for cut in (len(data) // 2, 200):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="truncated"):
            load_model(str(p))


def test_unsupported_architecture(tmp_path):
    w, cfg = random_weights("llama")
    p = write_gguf(tmp_path / "gpt.gguf", w, cfg, arch="falcon")
    with pytest.raises(UnsupportedArchitectureError, match="'falcon'"):
        load_model(str(p))


def test_unsupported_tensor_type_is_named(tmp_path):
    w, cfg = random_weights("llama")
    q5 = gguf.GGMLQuantizationType.Q5_0  # 22-byte blocks of 32; ponder does not read it
    data = np.zeros((64, 128 // 32 * 22), np.uint8)
    p = write_gguf(tmp_path / "q5.gguf", w, cfg, overrides={"blk.0.ffn_down.weight": (data, q5)})
    with pytest.raises(UnsupportedTensorTypeError, match=r"blk\.0\.ffn_down\.weight.*Q5_0"):
        load_model(str(p))


def test_tensor_shape_mismatch(tmp_path):
    w, cfg = random_weights("llama")
    w["model.layers.1.mlp.up_proj.weight"] = np.zeros((96, 64), np.float32)
    p = write_gguf(tmp_path / "shape.gguf", w, cfg)
    with pytest.raises(TensorShapeError, match=r"blk\.1\.ffn_up\.weight.*\(96, 64\).*\(128, 64\)"):
        load_model(str(p))


def test_missing_tensor(tmp_path):
    w, cfg = random_weights("llama")
    p = write_gguf(tmp_path / "missing.gguf", w, cfg, skip={"blk.1.attn_v.weight"})
    with pytest.raises(ModelFormatError, match=r"blk\.1\.attn_v\.weight.*missing"):
        load_model(str(p))


def test_hf_unsupported_model_type(tmp_path):
    w, cfg = random_weights("llama")
    cfg["model_type"] = "mistral"
    with pytest.raises(UnsupportedArchitectureError, match="'mistral'"):
        load_model(write_hf(str(tmp_path / "hf"), w, cfg))


def test_hf_truncated_safetensors(tmp_path):
    w, cfg = random_weights("llama")
    d = write_hf(str(tmp_path / "hf"), w, cfg)
    path = tmp_path / "hf" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelFormatError, match="truncated"):
        load_model(d)


def test_prompt_longer_than_context(tiny_llama):
    engine = Engine(load_model(str(tiny_llama[2])))
    ctx = engine.config.context_length
    with pytest.raises(ContextLengthError, match=f"{ctx + 5} tokens.*context window is {ctx}"):
        engine.generate([5] * (ctx + 5), SamplingParams(max_tokens=1))


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"nope")
    assert cli_main(["generate", "hi", "-m", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ponder: error:") and "not a GGUF file" in err and "Traceback" not in err


@pytest.mark.parametrize("key,value,pattern", [
    ("num_attention_heads", 0, "num_attention_heads is 0, outside the range"),
    ("num_hidden_layers", "2", "num_hidden_layers is '2', not an integer"),
    ("rms_norm_eps", float("nan"), "rms_norm_eps is nan"),
    ("rope_theta", -1.0, "rope_theta is -1.0"),
    ("max_position_embeddings", 2 ** 40, "max_position_embeddings is 1099511627776, outside the range"),
    ("num_key_value_heads", 3, "num_attention_heads .4. is not a multiple of num_key_value_heads .3."),
])
def test_hf_config_values_are_checked(tmp_path, key, value, pattern):
    w, cfg = random_weights("llama")
    cfg[key] = value
    with pytest.raises(ModelConfigError, match=pattern):
        load_model(write_hf(str(tmp_path / "hf"), w, cfg))


def test_hf_malformed_safetensors_header(tmp_path):
    import json
    import struct

    w, cfg = random_weights("llama")
    d = write_hf(str(tmp_path / "hf"), w, cfg)
    path = tmp_path / "hf" / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["model.norm.weight"]["data_offsets"] = "x"
    head = json.dumps(header).encode()
    head += b" " * (n - len(head)) if len(head) <= n else b""
    assert len(head) == n
    path.write_bytes(raw[:8] + head + raw[8 + n:])
    with pytest.raises(ModelFormatError, match="header entry of tensor 'model.norm.weight' is malformed"):
        load_model(d)
