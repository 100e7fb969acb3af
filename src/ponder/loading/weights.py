"""The weights of one model as loaded from disk: compact, memory-mapped, unexpanded.

A WeightTensor keeps a matrix in its file format (Q4_0, Q4_1, Q8_0, F16, BF16 or
F32) as raw bytes, one row per output feature.  Nothing here converts to float;
the reference forward dequantizes on demand and the fast path repacks.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

import numpy as np

from ponder.errors import TensorShapeError, UnsupportedTensorTypeError
from ponder.kernels import quant_formats
from ponder.loading.config import ModelConfig


@dataclass
class WeightTensor:
    name: str
    fmt: str
    rows: int
    cols: int
    data: np.ndarray  # uint8, shape (rows, row_bytes)

    def __post_init__(self):
        if self.fmt not in quant_formats.SUPPORTED:
            raise UnsupportedTensorTypeError(
                f"tensor {self.name!r} has type {self.fmt}, which ponder does not support "
                f"(supported: {', '.join(quant_formats.SUPPORTED)})"
            )
        if self.fmt in quant_formats.QUANT_BLOCK_BYTES and self.cols % quant_formats.BLOCK:
            raise TensorShapeError(f"tensor {self.name!r}: {self.cols} columns is not a multiple of 32")
        expected = (self.rows, quant_formats.row_bytes(self.fmt, self.cols))
        if tuple(self.data.shape) != expected:
            raise TensorShapeError(f"tensor {self.name!r}: {self.data.shape[0]}x{self.data.shape[1]} bytes, expected {expected}")

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def dequantize(self) -> np.ndarray:
        return quant_formats.dequantize(self.fmt, self.data, self.rows, self.cols)

    def dequantize_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        return quant_formats.dequantize(self.fmt, self.data[rows], len(rows), self.cols)

    def select_rows(self, order: np.ndarray) -> WeightTensor:
        """A copy with rows reordered (used to undo llama.cpp's Q/K row permutation)."""
        return WeightTensor(self.name, self.fmt, self.rows, self.cols, np.ascontiguousarray(self.data[order]))


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    wq: WeightTensor
    wk: WeightTensor
    wv: WeightTensor
    wo: WeightTensor
    ffn_norm: np.ndarray
    w_gate: WeightTensor
    w_up: WeightTensor
    w_down: WeightTensor
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None

    def matrices(self) -> dict[str, WeightTensor]:
        return {"wq": self.wq, "wk": self.wk, "wv": self.wv, "wo": self.wo,
                "w_gate": self.w_gate, "w_up": self.w_up, "w_down": self.w_down}


@dataclass
class ModelWeights:
    config: ModelConfig
    embed: WeightTensor
    output: WeightTensor  # the same object as `embed` when embeddings are tied
    final_norm: np.ndarray
    layers: list[LayerWeights] = field(default_factory=list)
    source: str | None = None  # the model file the tensors map, if one (keys the packed-weight cache)

    @property
    def tied(self) -> bool:
        return self.output is self.embed

    def nbytes(self) -> int:
        total = self.embed.nbytes + (0 if self.tied else self.output.nbytes) + self.final_norm.nbytes
        for layer in self.layers:
            total += sum(m.nbytes for m in layer.matrices().values())
            total += layer.attn_norm.nbytes + layer.ffn_norm.nbytes
        return total

    def release_pages(self) -> None:
        """Drop the file pages read so far from memory (they are clean: the OS rereads on demand).

        After the fast path has repacked the matrices, only embedding rows are read
        from the file, a few at a time; keeping the whole file resident would double
        the model's memory.
        """
        seen = set()
        for t in [self.embed, self.output] + [m for layer in self.layers for m in layer.matrices().values()]:
            handle = file_mapping(t.data)
            if handle is not None and id(handle) not in seen and hasattr(mmap, "MADV_DONTNEED"):
                seen.add(id(handle))
                handle.madvise(mmap.MADV_DONTNEED)

    def validate(self) -> None:
        """Check every tensor's shape against the config; name the first that disagrees."""
        c = self.config
        expect = {"wq": (c.q_dim, c.dim), "wk": (c.kv_dim, c.dim), "wv": (c.kv_dim, c.dim),
                  "wo": (c.dim, c.q_dim), "w_gate": (c.ffn_dim, c.dim), "w_up": (c.ffn_dim, c.dim),
                  "w_down": (c.dim, c.ffn_dim)}
        for t, shape in [(self.embed, (c.vocab_size, c.dim)), (self.output, (c.vocab_size, c.dim))]:
            _check(t.name, (t.rows, t.cols), shape)
        _check("final norm", self.final_norm.shape, (c.dim,))
        if len(self.layers) != c.n_layers:
            raise TensorShapeError(f"model has {len(self.layers)} layers, config says {c.n_layers}")
        for layer in self.layers:
            for key, t in layer.matrices().items():
                _check(t.name, (t.rows, t.cols), expect[key])
            _check("attention norm", layer.attn_norm.shape, (c.dim,))
            _check("ffn norm", layer.ffn_norm.shape, (c.dim,))
            for bias, n in [(layer.bq, c.q_dim), (layer.bk, c.kv_dim), (layer.bv, c.kv_dim)]:
                if bias is not None:
                    _check("attention bias", bias.shape, (n,))


def file_mapping(a: np.ndarray) -> mmap.mmap | None:
    """The memory map an array views, if it views one (np.memmap, or np.frombuffer of an mmap)."""
    while isinstance(a, np.ndarray):
        a = a.base
    if isinstance(a, memoryview):
        a = a.obj
    return a if isinstance(a, mmap.mmap) else None


def _check(name: str, actual: tuple, expected: tuple) -> None:
    if tuple(actual) != tuple(expected):
        raise TensorShapeError(
            f"tensor {name!r} has shape {tuple(actual)} but the model config implies {tuple(expected)}"
        )


def unpermute_qk_rows(n_heads: int, head_dim: int) -> np.ndarray:
    """Row order that undoes llama.cpp's Q/K permutation for `llama` GGUF files.

    llama.cpp's converter interleaves each head's two rotary halves so it can rotate
    adjacent pairs; ponder (like Hugging Face) rotates the halves.  Undoing the
    permutation at load lets one RoPE serve both file formats.
    """
    return np.arange(n_heads * head_dim).reshape(n_heads, head_dim // 2, 2).transpose(0, 2, 1).reshape(-1)
