"""The engine's read-only views: `EngineInfo` (settings fixed at construction) and `EngineStats` (counters now).

Layers above the engine (server, transcripts, benchmarks, the CLI) read these
and nothing else of the engine's internals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EngineInfo:
    model_name: str
    model_path: str
    activation_bits: int  # 16: ponder's two-int8 activations; 8: llama.cpp's q8
    isa: str  # the instruction set the integer kernels run on
    threads: int  # threads the engine's kernels run on
    kernel_version: str
    ponder_version: str
    context_length: int
    vocab_size: int
    block_size: int
    kv_blocks: int
    token_budget: int
    prefix_cache: bool
    speculative: str  # "off", "lookup" or "recycling"
    speculative_tokens: int
    weight_bytes: int  # bytes of weights a forward step reads
    max_sequence: int  # a sequence (prompt + answer) ends here: the context window or the KV pool, if smaller
    speculative_prior: str = "none"  # Token Recycling's starting table: "hit" (read), "built" or "none" (cold)
    runtime: str = "numba"  # what runs the kernels: "native", "numba", or "native+numba" (model/kernel_set.py)

    def fingerprint(self, sha256: str) -> str:
        """What determines the outputs, for the server's system_fingerprint (the model file hash first)."""
        return (f"{sha256}-ponder{self.ponder_version}-kernels{self.kernel_version}-a{self.activation_bits}"
                f"-{self.isa}-t{self.threads}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EngineStats:
    waiting_requests: int
    running_requests: int
    waiting_sequences: int
    running_sequences: int
    unfinished_requests: int  # requests whose result has not been popped yet and are not finished
    steps: int
    preemptions: int
    prefix_cache_nodes: int
    kv_blocks_total: int
    kv_blocks_used: int  # held by requests
    kv_blocks_cached: int  # kept only by the prefix cache (evictable)
    tool_sequences: int  # samples paused while their tool call runs (out of the batch, KV kept)

    def to_dict(self) -> dict:
        return asdict(self)
