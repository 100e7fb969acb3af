"""One entry point for loading: a model name or path -> weights, tokenizer and identity."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ponder.errors import ModelFormatError, ModelNotFoundError
from ponder.loading import registry
from ponder.loading.gguf_file import read_gguf
from ponder.loading.hf_checkpoint import read_hf_checkpoint
from ponder.loading.tokenizer import Tokenizer
from ponder.loading.weights import ModelWeights


@dataclass
class LoadedModel:
    name: str  # what the user called it
    path: str
    weights: ModelWeights
    tokenizer: Tokenizer

    @property
    def config(self):
        return self.weights.config

    def sha256(self) -> str:
        return registry.file_sha256(self.path)


def load_model(name_or_path: str = registry.DEFAULT_MODEL, auto_pull: bool = True) -> LoadedModel:
    path = registry.resolve(name_or_path, auto_pull=auto_pull)
    if os.path.isdir(path):
        tok_json = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tok_json):
            raise ModelFormatError(f"{path} has no tokenizer.json")
        weights, extra = read_hf_checkpoint(path)
        tokenizer = Tokenizer.from_hf_files(tok_json, extra["tokenizer_config"], extra["generation_config"])
    elif os.path.isfile(path):
        weights, meta = read_gguf(path)
        tokenizer = Tokenizer.from_gguf_metadata(meta, path)
    else:
        raise ModelNotFoundError(f"no such model file or directory: {path}")
    return LoadedModel(name_or_path, path, weights, tokenizer)
