"""`ponder info`: version, instruction set and back end, threads, kernel cache, cached models."""

import json
import os

from ponder import __version__
from ponder.cli.main import main


def test_info(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    model = tmp_path / "models" / "my-model"
    model.mkdir(parents=True)
    (model / "weights.gguf").write_bytes(b"x" * 2_000_000)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ponder"] == __version__ and info["threads"] >= 1 and info["ponder_home"] == str(tmp_path)
    assert info["isa"].split()[0] in ("avx512_vnni", "avx_vnni", "avx2", "portable", "scalar")
    assert os.path.isabs(info["kernel_cache"]) and info["kernel_cache_bytes"] >= 0
    models = {m["name"]: m for m in info["models"]}
    assert models["smollm2-135m"]["name"] == "smollm2-135m"
    assert models["my-model"]["bytes"] == 2_000_000
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("instruction set", "kernel back end", "threads", "kernel cache", str(tmp_path), "model my-model",
                 "2.0 MB", __version__):
        assert word in out
