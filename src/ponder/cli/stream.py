"""One request's text written to the terminal as it becomes final: `ponder generate` and `ponder chat`.

engine/stream_text.SampleText decides what is final, as for the server's streams: text inside an
unfinished UTF-8 character, or that may be the start of a stop string, is held back (within a
round: a tool's output never holds text back); what has been written is always a prefix of the
result's text.
"""

from __future__ import annotations

from collections.abc import Callable


def stream(engine, rid: int, params, out, should_stop: Callable[[], bool] | None = None,
           first_step: Callable[[], None] | None = None):
    """Step the engine until request `rid` finishes, writing its text to `out`; returns its (popped) result.

    should_stop() is asked before each step: True aborts the request (Ctrl-C in chat).
    first_step() is called once, after the first step (the CLI's start-up ends there).
    """
    from ponder.engine.finish import is_stop_token
    from ponder.engine.stream_text import SampleText

    text = SampleText(engine.tokenizer, params.stop)
    eos = engine.tokenizer.eos_ids
    written = 0
    while not engine.is_finished(rid):
        if should_stop is not None and should_stop():
            engine.abort(rid)
            break
        events = engine.step()
        if first_step is not None:
            first_step, call = None, first_step
            call()
        for ev in events:
            if ev.request_id == rid:
                text.add(ev.token_id, tool=ev.tool,
                         hidden=ev.finish_reason == "stop" and is_stop_token(ev.token_id, params, eos))
        piece = text.take()[0]  # once per step: a splice's tokens all arrive in one step
        out.write(piece)
        out.flush()
        written += len(piece)
    result = engine.pop_result(rid)
    if result.error is None:  # what was written is a prefix of the result's text: write the rest
        out.write(result.text[written:])
    return result
