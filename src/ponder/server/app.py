"""The HTTP app: OpenAI-compatible routes on Starlette, fed to one engine thread.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /health,
GET /metrics, and vLLM-style POST /tokenize, POST /detokenize, GET /tokenizer_info.

Each HTTP request is parsed and validated here (protocol.py), its prompts are
tokenized here, and then it becomes Jobs for the engine thread (engine_loop.py).
Messages come back on one asyncio queue per HTTP request.  A client that goes
away cancels its jobs (the engine aborts them and frees their KV blocks).  Every
failure is answered with an OpenAI-style JSON error; internals are logged, never
sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from collections import Counter

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ponder.engine.finish import is_stop_token, shown
from ponder.engine.stream_text import SampleText
from ponder.errors import ContextLengthError
from ponder.server import metrics, protocol
from ponder.loading.detokenize import TokenStrings, token_offsets
from ponder.server.engine_loop import EngineLoop, Job
from ponder.server.protocol import APIError, api_error

log = logging.getLogger("ponder.server")

MAX_BODY = 16 << 20  # bytes of JSON per request


def fingerprint(engine) -> str:
    """What determines the outputs: the model file's sha256, ponder's version, the kernels' numerics.

    "<sha256>-ponder<version>-kernels<version>-a<activation bits>-<isa>-t<threads>"; the first field
    is the full hash of the model file, so a client can tell exactly which weights answered.
    """
    return engine.info().fingerprint(engine.model.sha256())


class _Disconnected(Exception):
    pass


class _Run:
    """The engine jobs of one HTTP request, and the queue their messages arrive on."""

    def __init__(self, server: Server, request: Request):
        self.server = server
        self.request = request
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.open: dict = {}  # tag -> Job, until it is done
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            msg = await self.request.receive()
            if msg["type"] == "http.disconnect":
                self.queue.put_nowait((None, ("disconnect",)))
                return

    def submit(self, tag, kind: str, ids: list[int], params=None, top: int = 0, tools: tuple = ()) -> None:
        loop, queue = self.loop, self.queue

        def sink(msg, tag=tag):
            loop.call_soon_threadsafe(queue.put_nowait, (tag, msg))

        job = Job(kind, ids, sink, params, top)
        if tools:
            from ponder.tools import get_tools

            job.tools = get_tools(tools)  # fresh objects per request
        self.open[tag] = job
        self.server.engine_loop.submit(job)

    async def next(self) -> tuple:
        """(tag, message); raises _Disconnected when the client has gone, APIError on a job's error."""
        tag, msg = await self.queue.get()
        if msg[0] == "disconnect":
            raise _Disconnected()
        if msg[0] in ("done", "error"):
            self.open.pop(tag, None)
        if msg[0] == "error":
            raise api_error(msg[1])
        return tag, msg

    def close(self) -> None:
        """Cancel whatever has not finished (client gone, or another prompt's error)."""
        self._watcher.cancel()
        for job in self.open.values():
            self.server.engine_loop.cancel(job)
        self.open.clear()


class _EventStream(StreamingResponse):
    """A StreamingResponse that gives its queue slots back however it ends (even if never iterated)."""

    def __init__(self, content, release, **kwargs):
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class Server:
    def __init__(self, engine, model_name: str | None = None, api_key: str | None = None, max_queue: int = 256):
        self.engine = engine
        self.engine_loop = EngineLoop(engine)
        self.tokenizer = engine.tokenizer
        self.strings = TokenStrings(engine.tokenizer)
        info = engine.info()
        self.context_length = info.context_length
        self.kv_tokens = info.kv_blocks * info.block_size
        self.max_prompt_tokens = min(self.context_length, self.kv_tokens)
        # The most characters one token can stand for: its symbol's length (byte-level BPE: one
        # character per byte; added tokens: their text).  Bounds a text's tokens before tokenizing.
        self.max_token_chars = max(map(len, engine.tokenizer.hf.get_vocab(with_added_tokens=True)), default=1)
        self.model_id = model_name or info.model_name
        path = info.model_path.rstrip("/")
        base = os.path.basename(path)
        self.model_names = {self.model_id, info.model_name, path, base, os.path.splitext(base)[0]}
        self.api_key = api_key
        self.max_queue = max_queue
        self.fingerprint = fingerprint(engine)
        self.created = int(time.time())
        self.open = 0  # prompts admitted and not yet answered (touched only on the event loop)
        self.http_status: Counter = Counter()
        self.rejected = 0

    # -- plumbing ----------------------------------------------------------------
    def app(self) -> Starlette:
        r = self._route
        routes = [
            Route("/v1/models", r(self.models), methods=["GET"]),
            Route("/v1/models/{model:path}", r(self.model), methods=["GET"]),
            Route("/v1/completions", r(self.completions), methods=["POST"]),
            Route("/v1/chat/completions", r(self.chat), methods=["POST"]),
            Route("/tokenize", r(self.tokenize), methods=["POST"]),
            Route("/detokenize", r(self.detokenize), methods=["POST"]),
            Route("/tokenizer_info", r(self.tokenizer_info), methods=["GET"]),
            Route("/health", r(self.health, auth=False), methods=["GET"]),
            Route("/metrics", r(self.metrics, auth=False), methods=["GET"]),
        ]

        async def http_error(request, exc: HTTPException):  # the router's 404 and 405 (with its Allow header)
            self.http_status[exc.status_code] += 1
            msg = "not found" if exc.status_code == 404 else (exc.detail or "error")
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
            return JSONResponse(APIError(f"{msg}: {request.method} {request.url.path}", exc.status_code,
                                         code=code).body(), status_code=exc.status_code, headers=exc.headers)

        async def any_error(request, exc: Exception):  # the backstop; _route catches first
            log.error("unhandled error", exc_info=exc)
            return JSONResponse(api_error(exc).body(), status_code=500)

        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: any_error},
                        lifespan=self._lifespan)

        async def asgi(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            closed = False

            async def send_unless_closed(message):
                # uvicorn answers a request whose HTTP framing breaks mid-body (a bad chunk) with its own
                # 400 and closes it; our answer then fails inside h11.  The client has had its answer.
                nonlocal closed
                if closed:
                    return
                try:
                    await send(message)
                except Exception as e:
                    if type(e).__name__ != "LocalProtocolError":
                        raise
                    closed = True
                    log.info("dropped the answer to %s: the server closed the connection (%s)", scope["path"], e)

            await app(scope, receive, send_unless_closed)

        return asgi

    def _lifespan(self, app):
        server = self

        class _Ctx:
            async def __aenter__(self):
                server.engine_loop.start()

            async def __aexit__(self, *exc):
                server.engine_loop.stop()

        return _Ctx()

    def _route(self, handler, auth: bool = True):
        async def endpoint(request: Request) -> Response:
            try:
                if auth:
                    self._check_key(request)
                response = await handler(request)
            except ClientDisconnect:  # gone while its body was being read: nobody to answer, nothing to log
                response = Response(status_code=499)
            except Exception as e:  # every failure becomes a JSON error
                err = api_error(e)
                if err.status >= 500:
                    log.error("error answering %s", request.url.path, exc_info=e)
                if err.status == 429:
                    self.rejected += 1
                response = JSONResponse(err.body(), status_code=err.status)
            self.http_status[response.status_code] += 1
            return response

        return endpoint

    def _check_key(self, request: Request) -> None:
        if not self.api_key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise APIError("invalid or missing API key (send Authorization: Bearer KEY)", 401, code="invalid_api_key")

    async def _json(self, request: Request) -> dict:
        """The body as a JSON object (protocol.decode_body), read up to MAX_BODY and decoded off the event loop."""
        too_big = APIError(f"the request body is larger than {MAX_BODY} bytes", 413, code="body_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and (len(declared) > 12 or int(declared) > MAX_BODY):
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise too_big
            chunks.append(chunk)
        raw = b"".join(chunks)
        return await _off_loop(lambda: protocol.decode_body(raw), size // 16)

    def _check_model(self, model) -> None:
        if model is not None and not isinstance(model, str):
            raise APIError("model must be a string", param="model", code="invalid_type")
        if model is not None and model not in self.model_names:
            raise APIError(f"the model {model!r} does not exist; this server serves {self.model_id!r}", 404,
                           param="model", code="model_not_found")

    def _prompt_ids(self, prompt, generate: bool) -> list[int]:
        """A prompt's token ids, validated by the engine (vocabulary; context window and KV pool: 413).

        Blocking: run it off the event loop.  A text is measured before it is tokenized: a token
        covers at most `max_token_chars` characters, so a longer text cannot fit and is refused
        without tokenizing it.
        """
        if isinstance(prompt, str):
            limit = self.max_prompt_tokens - 1 if generate else self.max_prompt_tokens
            if len(prompt) > limit * self.max_token_chars:
                raise self._too_long(len(prompt), limit)
            ids = self.tokenizer.encode(prompt)
        else:
            ids = prompt
        self.engine.check_prompt(ids, generate)  # the engine's own validation, before any work is queued
        return ids

    def _too_long(self, chars: int, limit: int) -> ContextLengthError:
        return ContextLengthError(f"the prompt is {chars} characters, more than {limit} tokens can hold (a token "
                                  f"is at most {self.max_token_chars} characters); this server takes prompts of at "
                                  f"most {self.max_prompt_tokens} tokens (context window {self.context_length}, "
                                  f"KV pool {self.kv_tokens})")

    def _admit(self, k: int):
        """Hold k prompt slots; returns the (idempotent) function that gives them back.

        Called after validation and tokenizing, so that a request that can never succeed gets its
        4xx rather than a 429 that invites a retry.
        """
        if self.open + k > self.max_queue:
            raise APIError(f"the server is at capacity ({self.max_queue} prompts queued or running); retry later",
                           429, code="queue_full")
        self.open += k
        held = [k]

        def release():
            self.open -= held.pop() if held else 0

        return release

    def _envelope(self, kind: str, rid: str, created: int) -> dict:
        return {"id": rid, "object": kind, "created": created, "model": self.model_id,
                "system_fingerprint": self.fingerprint}

    def _usage(self, prompt_tokens: int, completion_tokens: int, cached: int, tool: dict | None = None) -> dict:
        """OpenAI's usage; with ponder_tools, the spliced tool tokens and the calls are counted apart
        (completion_tokens are the model's own)."""
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached}, **(tool or {})}

    # -- info routes ------------------------------------------------------------------
    def _model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "ponder",
                "max_model_len": self.context_length}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self._check_model(request.path_params["model"])
        return JSONResponse(self._model_card())

    async def health(self, request: Request) -> Response:
        if not self.engine_loop.is_alive():
            return JSONResponse(APIError("the engine thread is not running", 503, code="engine_down").body(),
                                status_code=503)
        return JSONResponse({"status": "ok", "model": self.model_id})

    async def metrics(self, request: Request) -> Response:
        text = metrics.render(self.engine_loop.stats,
                              {"open": self.open, "status": self.http_status, "rejected": self.rejected})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- tokenizer routes (vLLM's shapes) ------------------------------------------------
    async def tokenize(self, request: Request) -> Response:
        body = await self._json(request)
        self._check_model(body.get("model"))
        add_special = body.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise APIError("add_special_tokens must be a boolean", param="add_special_tokens", code="invalid_type")
        if "messages" in body:
            add_gen = body.get("add_generation_prompt", True)
            if not isinstance(add_gen, bool):
                raise APIError("add_generation_prompt must be a boolean", param="add_generation_prompt",
                               code="invalid_type")
            messages = protocol.parse_messages(body["messages"])
            add_special = False  # the template already holds the special tokens
        else:
            messages, text = None, body.get("prompt")
            if not isinstance(text, str):
                raise APIError("prompt must be a string (or send messages)", param="prompt", code="invalid_type")
        strs = body.get("return_token_strs", False)
        if not isinstance(strs, bool):
            raise APIError("return_token_strs must be a boolean", param="return_token_strs", code="invalid_type")

        def work() -> dict:
            prompt = text if messages is None else self.tokenizer.apply_chat_template(messages, add_gen)
            # Any length, as vLLM's /tokenize: lm-eval measures long documents with it (bounded by MAX_BODY)
            ids = self.tokenizer.encode(prompt, add_bos=None if add_special else False)
            out = {"count": len(ids), "max_model_len": self.context_length, "tokens": ids}
            if strs:
                out["token_strs"] = [self.strings.text(t) for t in ids]
            return out

        return JSONResponse(await _off_loop(work, len(text) if messages is None else _chars(messages)))

    async def detokenize(self, request: Request) -> Response:
        body = await self._json(request)
        self._check_model(body.get("model"))
        ids = body.get("tokens")
        if not (isinstance(ids, list) and all(protocol.is_int(t) for t in ids)):
            raise APIError("tokens must be a list of token ids", param="tokens", code="invalid_type")
        self.engine.check_token_ids(ids, "tokens")
        return JSONResponse({"prompt": await _off_loop(lambda: self.tokenizer.decode(ids), len(ids))})

    async def tokenizer_info(self, request: Request) -> Response:
        tok = self.tokenizer
        eos = min(tok.eos_ids) if tok.eos_ids else None

        def name(i):
            return None if i is None else tok.hf.id_to_token(int(i))

        return JSONResponse({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": name(eos), "eos_token_ids": sorted(tok.eos_ids),
            "bos_token": name(tok.bos_id), "pad_token": None, "add_bos_token": bool(tok.add_bos),
            "chat_template": getattr(tok.template, "source", None),
            "model_max_length": self.context_length, "vocab_size": tok.vocab_size,
        })

    # -- generation routes ----------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        req = protocol.parse_completion(await self._json(request), self.context_length)
        self._check_model(req.model)
        generate = req.max_tokens != 0

        def work():  # off the event loop: tokenizing a long prompt takes a while
            ids = [self._prompt_ids(p, generate) for p in req.prompts]
            echo = [p if isinstance(p, str) else self.tokenizer.decode(i) if req.echo else ""
                    for p, i in zip(req.prompts, ids)]
            return ids, echo

        ids, echo_texts = await _off_loop(work, sum(len(p) for p in req.prompts))
        release = self._admit(len(ids))
        if req.stream:
            return self._sse(self._stream(request, req, ids, echo_texts, release), release)
        try:
            return await self._complete(request, req, ids, echo_texts)
        finally:
            release()

    async def chat(self, request: Request) -> Response:
        req, messages, add_gen = protocol.parse_chat(await self._json(request), self.context_length)
        self._check_model(req.model)

        def work():  # off the event loop
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_gen)
            return [self._prompt_ids(text, req.max_tokens != 0)]

        ids = await _off_loop(work, _chars(messages))
        release = self._admit(1)
        if req.stream:
            return self._sse(self._stream(request, req, ids, [""], release), release)
        try:
            return await self._complete(request, req, ids, [""])
        finally:
            release()

    def _sse(self, gen, release) -> StreamingResponse:
        return _EventStream(gen, release, media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _submit_all(self, run: _Run, req, ids: list[list[int]], scores_first: bool) -> None:
        want_scores = req.echo and req.logprobs is not None
        for i, p in enumerate(ids):
            if want_scores:
                run.submit(("score", i), "score", p, top=req.logprobs)
            if req.max_tokens != 0 and not (want_scores and scores_first):
                run.submit(("gen", i), "generate", p, req.params, tools=req.tools)

    async def _complete(self, request: Request, req, ids, echo_texts) -> Response:
        run = _Run(self, request)
        scores, results = {}, {}
        try:
            self._submit_all(run, req, ids, scores_first=False)
            while run.open:
                (what, i), msg = await run.next()
                if msg[0] == "done":
                    (scores if what == "score" else results)[i] = msg[1]
        except _Disconnected:
            return Response(status_code=499)  # nobody is listening
        finally:
            run.close()
        created, n = int(time.time()), req.params.n
        choices, completion_tokens, cached, tool = [], 0, 0, {}
        for i, p in enumerate(ids):
            res = results.get(i)
            if res is not None:
                completion_tokens += res.usage.get("completion_tokens", 0)
                cached += res.usage.get("cached_tokens", 0)
                _add_tool_usage(tool, res.usage)
            for s in range(n):
                out = res.outputs[s] if res is not None else None
                choices.append(self._choice(req, p, echo_texts[i], scores.get(i), out, i * n + s))
        usage = self._usage(sum(len(p) for p in ids), completion_tokens, cached, tool)
        if req.kind == "chat":
            body = self._envelope("chat.completion", f"chatcmpl-{uuid.uuid4().hex}", created)
        else:
            body = self._envelope("text_completion", f"cmpl-{uuid.uuid4().hex}", created)
        body.update(choices=choices, usage=usage)
        return JSONResponse(body)

    def _choice(self, req, prompt_ids, echo_text, score, out, index) -> dict:
        choice = self._plain_choice(req, prompt_ids, echo_text, score, out, index)
        if req.tools and out is not None and out.tool_calls is not None:
            # ponder's extension: the calls, and which of the choice's tokens are tool output
            choice["ponder_tools"] = {"calls": out.tool_calls, "token_spans": [list(s) for s in out.tool_spans]}
        return choice

    def _plain_choice(self, req, prompt_ids, echo_text, score, out, index) -> dict:
        finish = out.finish_reason if out is not None else "length"
        why = self._stop_reason(out, finish, req.params) if out is not None else None
        if req.kind == "chat":
            choice = {"index": index, "message": {"role": "assistant", "content": out.text if out else ""},
                      "logprobs": None, "finish_reason": finish, "stop_reason": why}
            if req.logprobs is not None and out is not None:
                ids, lps, tops = self._shown(out, req.params)
                choice["logprobs"] = {"content": self._chat_logprobs(req, ids, lps, tops)}
            return choice
        prefix = echo_text if req.echo else ""
        text = prefix + (out.text if out is not None else "")
        lp = None
        if req.logprobs is not None:
            lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            if req.echo:
                self._extend_legacy(req, lp, prompt_ids, [None] + [d["logprob"] for d in score],
                                    [None] + [d["top_logprobs"] for d in score], 0)
            if out is not None:
                self._extend_legacy(req, lp, out.token_ids, out.logprobs, out.top_logprobs or [[]] * len(out.token_ids),
                                    len(prefix))
        return {"index": index, "text": text, "logprobs": lp, "finish_reason": finish, "stop_reason": why}

    def _stop_reason(self, out, finish: str, params) -> str | int | None:
        """vLLM's stop_reason: the stop string or stop token id that ended the sample; None for EOS or length.
        With tools, stop strings are looked for in the last round only (engine/tool_calls.py)."""
        ids = out.token_ids[out.tool_spans[-1][0] + out.tool_spans[-1][1]:] if out.tool_spans else out.token_ids
        return self._stop_reason_of(ids, finish, params)

    def _stop_reason_of(self, ids, finish: str, params) -> str | int | None:
        return shown(ids, [0.0] * len(ids), None, finish, params, self.tokenizer.eos_ids,
                     self.tokenizer.decode).stop_reason

    def _shown(self, out, params):
        """Chat shows no stop token: the ids, logprobs and alternatives without a final EOS / stop_token_id."""
        view = shown(out.token_ids, out.logprobs, out.top_logprobs, out.finish_reason, params, self.tokenizer.eos_ids)
        return view.token_ids, view.logprobs, view.top_logprobs

    def _tok(self, req, token: int) -> str:
        return f"token_id:{token}" if req.token_ids_as_tokens else self.strings.text(token)

    def _top_dict(self, req, token: int, logprob: float, top) -> dict:
        """The top alternatives as {token: logprob}, and the chosen token (vLLM's shape: k or k + 1 entries)."""
        d = {}
        for t, lp in top or ():
            d.setdefault(self._tok(req, t), lp)
        d.setdefault(self._tok(req, token), logprob)
        return d

    def _extend_legacy(self, req, lp: dict, ids, logprobs, tops, start: int) -> None:
        lp["tokens"] += [self._tok(req, t) for t in ids]
        lp["token_logprobs"] += list(logprobs)
        lp["top_logprobs"] += [None if x is None else self._top_dict(req, t, x, top)
                               for t, x, top in zip(ids, logprobs, tops)]
        lp["text_offset"] += token_offsets(self.tokenizer, list(ids), start)

    def _chat_logprobs(self, req, ids, lps, tops) -> list[dict]:
        b = self.strings.bytes
        out = []
        for t, x, top in zip(ids, lps, tops if tops else [[]] * len(ids)):
            out.append({"token": self._tok(req, t), "logprob": x, "bytes": b(t),
                        "top_logprobs": [{"token": self._tok(req, a), "logprob": y, "bytes": b(a)}
                                         for a, y in (top or [])[:req.logprobs]]})
        return out

    # -- streaming ---------------------------------------------------------------------
    async def _stream(self, request: Request, req, ids, echo_texts, release):
        """Server-sent events for /v1/completions or /v1/chat/completions (admission already counted)."""
        chat = req.kind == "chat"
        rid = f"chatcmpl-{uuid.uuid4().hex}" if chat else f"cmpl-{uuid.uuid4().hex}"
        created, n = int(time.time()), req.params.n
        env = self._envelope("chat.completion.chunk" if chat else "text_completion", rid, created)
        eos = self.tokenizer.eos_ids
        texts = {(i, s): SampleText(self.tokenizer, req.params.stop) for i in range(len(ids)) for s in range(n)}
        prefix = {i: (echo_texts[i] if req.echo else "") for i in range(len(ids))}
        completion_tokens, cached, tool = 0, 0, {}

        def event(choices, **extra) -> str:
            return "data: " + json.dumps({**env, "choices": choices, **extra}) + "\n\n"

        def chunk(index, text, logprobs=None, finish=None, role=False, why=None) -> dict:
            if chat:
                delta = {"role": "assistant", "content": text} if role else ({"content": text} if text else {})
                lp = {"content": logprobs} if logprobs is not None else None
                out = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
            else:
                out = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
            if finish:
                out["stop_reason"] = why
            return out

        run = None
        try:
            run = _Run(self, request)
            self._submit_all(run, req, ids, scores_first=True)
            if chat:
                yield event([chunk(s, "", role=True) for s in range(n)])
            elif req.echo and req.logprobs is None:
                yield event([chunk(i * n + s, prefix[i]) for i in range(len(ids)) for s in range(n)])
            if req.max_tokens == 0 and not (req.echo and req.logprobs is not None):
                yield event([chunk(i * n + s, "", finish="length") for i in range(len(ids)) for s in range(n)])
            while run.open:
                (what, i), msg = await run.next()
                if what == "score":
                    if msg[0] == "done":
                        lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                        self._extend_legacy(req, lp, ids[i], [None] + [d["logprob"] for d in msg[1]],
                                            [None] + [d["top_logprobs"] for d in msg[1]], 0)
                        yield event([chunk(i * n + s, prefix[i], lp) for s in range(n)])
                        if req.max_tokens != 0:
                            run.submit(("gen", i), "generate", ids[i], req.params, tools=req.tools)
                        else:
                            yield event([chunk(i * n + s, "", finish="length") for s in range(n)])
                    continue
                if msg[0] == "done":
                    completion_tokens += msg[1].usage.get("completion_tokens", 0)
                    cached += msg[1].usage.get("cached_tokens", 0)
                    _add_tool_usage(tool, msg[1].usage)
                    continue
                events, tops = msg[1], msg[2] if len(msg) > 2 else None
                by_sample: dict[int, list] = {}
                for k, ev in enumerate(events):
                    by_sample.setdefault(ev.sample_index, []).append((ev, tops[k] if tops else []))
                choices = []
                for s, evs in sorted(by_sample.items()):
                    st = texts[(i, s)]
                    lps, finish, why = [], None, None
                    legacy = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                    for ev, top in evs:
                        hidden = ev.finish_reason == "stop" and is_stop_token(ev.token_id, req.params, eos)
                        at = st.add(ev.token_id, tool=ev.tool, hidden=hidden)
                        if req.logprobs is not None and not (chat and hidden):
                            if chat:
                                lps += self._chat_logprobs(req, [ev.token_id], [ev.logprob], [top])
                            else:
                                legacy["tokens"].append(self._tok(req, ev.token_id))
                                legacy["token_logprobs"].append(ev.logprob)
                                legacy["top_logprobs"].append(self._top_dict(req, ev.token_id, ev.logprob, top))
                                legacy["text_offset"].append(len(prefix[i]) + at)
                        if ev.finish_reason:
                            finish = ev.finish_reason
                            st.finish()
                            ids_ = st.round_ids + [ev.token_id] if hidden else st.round_ids
                            why = self._stop_reason_of(ids_, finish, req.params)
                    text, tool_chars = st.take()
                    if finish == "abort":
                        continue
                    logprobs = (lps if chat else legacy) if req.logprobs is not None else None
                    if text or finish or logprobs:
                        c = chunk(i * n + s, text, logprobs, finish, why=why)
                        if tool_chars:  # ponder's extension: [start, end) of the tool output in this text
                            c["ponder_tool_chars"] = tool_chars
                        choices.append(c)
                if choices:
                    yield event(choices)
            if req.include_usage:
                usage = self._usage(sum(len(p) for p in ids), completion_tokens, cached, tool)
                yield event([], usage=usage)
            yield "data: [DONE]\n\n"
        except _Disconnected:
            return
        except Exception as e:  # the stream has started: report in-band
            err = api_error(e)
            if err.status >= 500:
                log.error("error while streaming", exc_info=e)
            yield "data: " + json.dumps(err.body()) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if run is not None:
                run.close()
            release()


SMALL = 4096  # characters (or token ids) that are handled on the event loop: a thread hop costs more


async def _off_loop(fn, size: int):
    """fn() on a worker thread when `size` says it may take a while, else right here."""
    return fn() if size <= SMALL else await asyncio.to_thread(fn)


def _add_tool_usage(total: dict, usage: dict) -> None:
    """Sum a result's tool counts into `total` (which stays empty for requests without tools)."""
    for k in ("tool_tokens", "tool_calls"):
        if k in usage:
            total[k] = total.get(k, 0) + usage[k]


def _chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def create_app(engine, model_name: str | None = None, api_key: str | None = None, max_queue: int = 256):
    return Server(engine, model_name, api_key, max_queue).app()
