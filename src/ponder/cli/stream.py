"""One request's text written to the terminal as it becomes final: `ponder generate` and `ponder chat`.

The server's incremental detokenizer decides what is final: text inside an
unfinished UTF-8 character, or that may be the start of a stop string, is held
back; what has been written is always a prefix of the result's text.
"""

from __future__ import annotations

from collections.abc import Callable


def stream(engine, rid: int, params, out, should_stop: Callable[[], bool] | None = None):
    """Step the engine until request `rid` finishes, writing its text to `out`; returns its (popped) result.

    should_stop() is asked before each step: True aborts the request (Ctrl-C in chat).
    """
    from ponder.engine.finish import is_stop_token
    from ponder.loading.detokenize import IncrementalDetokenizer

    detok = IncrementalDetokenizer(engine.tokenizer, params.stop)
    eos = engine.tokenizer.eos_ids
    while not engine.is_finished(rid):
        if should_stop is not None and should_stop():
            engine.abort(rid)
            break
        for ev in engine.step():
            if ev.request_id != rid or (ev.finish_reason == "stop" and is_stop_token(ev.token_id, params, eos)):
                continue
            detok.add(ev.token_id)
            out.write(detok.take())
            out.flush()
    result = engine.pop_result(rid)
    if result.error is None:
        out.write(detok.finish(result.text))
    return result
