import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from tiny_models import random_weights, write_gguf, write_hf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir):
    """(weights, config) of a tiny random llama; F32 GGUF and F32 HF copies on disk.

    Head dimension 64, as in real models, so the engine, strategy and server tests run the IR attention.
    """
    w, cfg = random_weights("llama", dim=128, n_heads=2, n_kv_heads=1)
    return w, cfg, write_gguf(tiny_dir / "llama-f32.gguf", w, cfg), write_hf(str(tiny_dir / "llama-hf"), w, cfg)


@pytest.fixture(scope="session")
def tiny_llama_small_head(tiny_dir):
    """A tiny llama with head dimension 16: attention takes the scalar fold (no IR kernel for it)."""
    w, cfg = random_weights("llama")
    return w, cfg, write_gguf(tiny_dir / "llama-small-head.gguf", w, cfg)


@pytest.fixture(scope="session")
def default_model_path():
    """The default model, pulled if needed.  Skipped only where it truly cannot be fetched."""
    from ponder.errors import PonderError
    from ponder.loading import registry

    try:
        return registry.resolve(registry.DEFAULT_MODEL)
    except PonderError as e:  # no network and no cache
        pytest.skip(f"default model unavailable: {e}")


@pytest.fixture(scope="session")
def default_model(default_model_path):
    from ponder.loading.model_files import load_model

    return load_model(default_model_path)


@pytest.fixture(scope="session")
def default_engine(default_model):
    from ponder import Engine

    return Engine(default_model)
