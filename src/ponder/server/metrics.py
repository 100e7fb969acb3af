"""/metrics in the Prometheus text format (version 0.0.4), written by hand."""

from __future__ import annotations

from ponder.server.engine_loop import Stats


def _line(out: list[str], name: str, kind: str, help_: str, samples) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    if not isinstance(samples, list):
        samples = [("", samples)]
    for labels, value in samples:
        out.append(f"{name}{labels} {float(value):.6g}" if isinstance(value, float) else f"{name}{labels} {value}")


def render(stats: Stats, http: dict) -> str:
    """stats: the engine thread's counters; http: the app's own counters."""
    out: list[str] = []
    _line(out, "ponder_queue_depth", "gauge", "Requests waiting for the engine (not yet running).", stats.queue_depth)
    _line(out, "ponder_running_requests", "gauge", "Requests the engine is generating for.", stats.running)
    _line(out, "ponder_tool_samples", "gauge", "Samples paused while a tool call they made runs.",
          stats.tool_samples)
    _line(out, "ponder_open_requests", "gauge", "Prompts admitted by the HTTP server and not yet answered.",
          http["open"])
    _line(out, "ponder_tokens_per_second", "gauge",
          f"Generated tokens per second over the last {Stats.WINDOW:g} s.", stats.tokens_per_second())
    hit = stats.cached_tokens / stats.prompt_tokens if stats.prompt_tokens else 0.0
    _line(out, "ponder_prefix_cache_hit_rate", "gauge",
          "Share of prompt tokens served from the prefix cache (since start).", float(hit))
    _line(out, "ponder_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", stats.prompt_tokens)
    _line(out, "ponder_cached_prompt_tokens_total", "counter", "Prompt tokens served by the prefix cache.",
          stats.cached_tokens)
    _line(out, "ponder_generation_tokens_total", "counter", "Tokens generated.", stats.generation_tokens)
    _line(out, "ponder_engine_steps_total", "counter", "Engine forward steps.", stats.steps)
    _line(out, "ponder_requests_finished_total", "counter", "Engine requests finished, by finish reason.",
          [(f'{{reason="{r}"}}', n) for r, n in sorted(stats.requests_finished.items())] or [('{reason="stop"}', 0)])
    _line(out, "ponder_scoring_requests_total", "counter", "Prompts scored (echo with logprobs).", stats.scores)
    _line(out, "ponder_http_requests_total", "counter", "HTTP requests answered, by status.",
          [(f'{{status="{s}"}}', n) for s, n in sorted(http["status"].items())] or [('{status="200"}', 0)])
    _line(out, "ponder_rejected_total", "counter", "Requests refused with 429 because the queue was full.",
          http["rejected"])
    _line(out, "ponder_kv_blocks_used", "gauge", "KV blocks held by requests.", stats.kv_blocks_used)
    _line(out, "ponder_kv_blocks_cached", "gauge", "KV blocks kept only by the prefix cache.", stats.kv_blocks_cached)
    _line(out, "ponder_kv_blocks_total", "gauge", "KV blocks in the pool.", stats.kv_blocks_total)
    return "\n".join(out) + "\n"
