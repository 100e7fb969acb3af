"""OpenAI-style request parsing and validation, and the error body.

`parse_completion` and `parse_chat` turn a decoded JSON body into a `ParsedRequest`
(prompts + SamplingParams + output options) or raise `APIError`, which renders as
{"error": {"message", "type", "param", "code"}} with an HTTP status.

Fields are of three kinds (the tables below list them):
  - honoured: they do what the OpenAI (or vLLM, for the extras) API says;
  - ignored: they cannot change the tokens (user, metadata, store, service_tier,
    parallel_tool_calls without tools, prompt_cache_key, ...) or have no meaning
    for a plain model (reasoning_effort); they are accepted and dropped;
  - neutral-only: they would change the tokens in a way ponder does not implement
    (presence_penalty, frequency_penalty, logit_bias, response_format json, tools, ...);
    their neutral value is accepted, any other value is a 400 naming the field.
Any other field is a 400 naming it, as OpenAI does: a typo never silently changes results.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from ponder.engine.sampling_params import SamplingParams
from ponder.errors import PonderError

MAX_N = 64  # samples per prompt
MAX_TOP_LOGPROBS = 20
MAX_STOP = 16  # stop strings per request
MAX_BATCH = 256  # prompts in one /v1/completions request
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions


class APIError(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type or _error_type(status)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def api_error(e: BaseException) -> APIError:
    """Any exception as an APIError; internals (tracebacks, reprs) never reach the client."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, PonderError):
        return APIError(str(e), e.http_status, getattr(e, "param", None), e.code)
    return APIError("internal server error", 500, code="internal_error")


# -- the body ----------------------------------------------------------------------

MAX_DEPTH = 32  # nesting of arrays and objects; OpenAI bodies need 5
INT_MIN, INT_MAX = -2**63, 2**63 - 1  # every integer field is a 64-bit one on the wire (as in vLLM, OpenAI)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Bad:
    """A value json.loads met that no field can take; decode_body reports it with the field's path."""

    def __init__(self, why: str):
        self.why = why


def _parse_int(text: str):
    # Called before Python's int() so that 5,000 digits never reach its int-string limit (ValueError).
    if len(text) > 20:
        return _Bad(f"is an integer of {len(text.lstrip('-'))} digits; integers must fit in 64 bits")
    v = int(text)
    return v if INT_MIN <= v <= INT_MAX else _Bad(f"is {v}, which does not fit in 64 bits")


def _parse_float(text: str):
    v = float(text)
    return v if math.isfinite(v) else _Bad(f"is {text[:20]}, which is not a finite 64-bit number")


def _parse_constant(text: str):
    return _Bad(f"is {text}, which is not valid JSON (numbers must be finite)")


def decode_body(raw: bytes) -> dict:
    """A request body -> a JSON object, or APIError(400) naming what is wrong and where.

    Beyond json.loads: the body must be UTF-8 and an object; nesting is bounded; strings must be
    valid Unicode (a lone surrogate such as "\\ud800" cannot be tokenized); numbers must be finite
    (no NaN, Infinity, or 1e999) and integers must fit in 64 bits.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(f"the body is not valid UTF-8 (byte {e.start})", code="invalid_json") from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as e:
        raise APIError(f"the body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                       code="invalid_json") from None
    except RecursionError:
        raise APIError(f"the body is nested too deeply (at most {MAX_DEPTH} levels)", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError("the body must be a JSON object", code="invalid_json")
    _check_values(data)
    return data


def _check_values(data: dict) -> None:
    """Walk the decoded body (iteratively: depth is bounded here, not by Python's stack)."""
    todo = [(data, "", 1)]
    while todo:
        value, path, depth = todo.pop()
        if isinstance(value, _Bad):
            raise APIError(f"{path} {value.why}", param=path, code="invalid_value")
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise APIError(f"{path or 'a field name'} is not valid Unicode: it holds a lone surrogate "
                               f"({_SURROGATE.search(value).group()!r}), which is not a character",
                               param=path or None, code="invalid_value")
            continue
        if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
            raise APIError(f"{path} is nested too deeply (at most {MAX_DEPTH} levels)", param=path,
                           code="invalid_value")
        if isinstance(value, dict):
            for k, v in value.items():
                todo.append((v, f"{path}.{k}" if path else k, depth + 1))
                todo.append((k, path, depth))  # the name first (popped first): paths hold only valid names
        elif isinstance(value, list):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


# -- fields -----------------------------------------------------------------------

COMMON_HONOURED = {"model", "n", "seed", "temperature", "top_p", "top_k", "min_p", "max_tokens",
                   "max_completion_tokens", "stop", "stop_token_ids", "ignore_eos", "stream", "stream_options",
                   "first_sample", "ponder_tools"}
COMPLETION_HONOURED = COMMON_HONOURED | {"prompt", "logprobs", "echo", "return_tokens_as_token_ids"}
CHAT_HONOURED = COMMON_HONOURED | {"messages", "logprobs", "top_logprobs", "add_generation_prompt",
                                   "return_tokens_as_token_ids"}

# Accepted and dropped: they do not change the tokens.
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "reasoning_effort",
           "prompt_cache_key", "safety_identifier", "prediction", "request_id", "priority"}

# Field -> predicate that is true for the values ponder can honour (the neutral ones).
NEUTRAL_ONLY = {
    "presence_penalty": lambda v: v is None or (_is_number(v) and v == 0),
    "frequency_penalty": lambda v: v is None or (_is_number(v) and v == 0),
    "repetition_penalty": lambda v: v is None or (_is_number(v) and v == 1),
    "logit_bias": lambda v: v is None or v == {},
    "response_format": lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
    "tools": lambda v: v is None or v == [],
    "tool_choice": lambda v: v is None or v in ("none", "auto"),
    "functions": lambda v: v is None or v == [],
    "function_call": lambda v: v is None or v in ("none", "auto"),
    "suffix": lambda v: v is None or v == "",
    "min_tokens": lambda v: v is None or v == 0,
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "verbosity": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "include_stop_str_in_output": lambda v: v is None or v is False,
    "skip_special_tokens": lambda v: v is None or v is False,
    "continue_final_message": lambda v: v is None or v is False,
    "chat_template_kwargs": lambda v: v is None or v == {},
    "use_beam_search": lambda v: v is None or v is False,
    "length_penalty": lambda v: v is None or v == 1,
    "best_of": lambda v: v is None or v == 1,
}

_WHY = {
    "presence_penalty": "penalties are not implemented (only 0 is accepted)",
    "frequency_penalty": "penalties are not implemented (only 0 is accepted)",
    "repetition_penalty": "penalties are not implemented (only 1 is accepted)",
    "logit_bias": "logit_bias is not implemented (only {} is accepted)",
    "response_format": "only {\"type\": \"text\"} is supported (no JSON mode or schemas)",
    "tools": "tool calling is not supported",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "suffix": "suffix (insertion) is not supported",
    "min_tokens": "min_tokens is not supported",
    "modalities": "only text output is supported",
    "audio": "audio output is not supported",
}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_fields(body: dict, honoured: set[str]) -> None:
    for name, value in body.items():
        if name in honoured or name in IGNORED:
            continue
        if name in NEUTRAL_ONLY:
            if not NEUTRAL_ONLY[name](value):
                why = _WHY.get(name, "only its default value is supported")
                raise APIError(f"unsupported value for {name}: {why}", param=name, code="unsupported_parameter")
            continue
        raise APIError(f"unrecognized request argument: {_short(name)}", param=name[:100],
                       code="unrecognized_argument")


def _get(body: dict, name: str, check, what: str, default=None):
    value = body.get(name)
    if value is None:
        return default
    if not check(value):
        raise APIError(f"{name} must be {what} (got {type(value).__name__} {_short(value)})", param=name,
                       code="invalid_type")
    return value


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _ranged(body, name, check, what, default, lo=None, hi=None):
    v = _get(body, name, check, what, default)
    if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise APIError(f"{name} must be {bounds} (got {v})", param=name, code="invalid_value")
    return v


# -- requests ----------------------------------------------------------------------

@dataclass
class ParsedRequest:
    kind: str  # "completion" or "chat"
    model: str | None
    prompts: list  # str or list of token ids, one per prompt (chat: one rendered prompt)
    params: SamplingParams  # max_tokens >= 1; see max_tokens
    max_tokens: int | None  # None: until the context window ends (chat default); 0: no generation
    echo: bool
    logprobs: int | None  # top alternatives wanted per token; None: no logprobs at all
    stream: bool
    include_usage: bool
    token_ids_as_tokens: bool = False  # vLLM's return_tokens_as_token_ids: logprob tokens as "token_id:N"
    tools: tuple[str, ...] = ()  # ponder_tools: the tools the engine runs in its decoding loop


def _common(body: dict, default_max_tokens: int | None):
    model = _get(body, "model", lambda v: isinstance(v, str), "a string")
    n = _ranged(body, "n", is_int, "an integer", 1, 1, MAX_N)
    seed = _ranged(body, "seed", is_int, "an integer", None, 0, 2**63 - 1)
    temperature = _ranged(body, "temperature", _is_number, "a number", 1.0, 0)
    top_p = _get(body, "top_p", _is_number, "a number", 1.0)
    if not 0 < top_p <= 1:
        raise APIError(f"top_p must be in (0, 1] (got {top_p})", param="top_p", code="invalid_value")
    top_k = _ranged(body, "top_k", is_int, "an integer", 0, -1)
    min_p = _ranged(body, "min_p", _is_number, "a number", 0.0, 0, 1)
    max_tokens = _ranged(body, "max_tokens", is_int, "an integer", None, 0)
    modern = _ranged(body, "max_completion_tokens", is_int, "an integer", None, 0)
    if modern is not None:
        if max_tokens is not None and max_tokens != modern:
            raise APIError("max_tokens and max_completion_tokens disagree; send one of them",
                           param="max_completion_tokens", code="invalid_value")
        max_tokens = modern
    if max_tokens is None:
        max_tokens = default_max_tokens
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise APIError("stop must be a string or a list of strings", param="stop", code="invalid_type")
    if len(stop) > MAX_STOP:
        raise APIError(f"at most {MAX_STOP} stop strings are supported", param="stop", code="invalid_value")
    stop = [s for s in stop if s]
    stop_ids = _get(body, "stop_token_ids", lambda v: isinstance(v, list) and all(is_int(t) for t in v),
                    "a list of integers", [])
    ignore_eos = _get(body, "ignore_eos", lambda v: isinstance(v, bool), "a boolean", False)
    # ponder's extension: the samples are numbers first_sample.. of the seed (rounds of one draw)
    first_sample = _get(body, "first_sample", lambda v: is_int(v) and v >= 0, "a non-negative integer", 0)
    stream = _get(body, "stream", lambda v: isinstance(v, bool), "a boolean", False)
    opts = _get(body, "stream_options", lambda v: isinstance(v, dict), "an object", {})
    include_usage = opts.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise APIError("stream_options.include_usage must be a boolean", param="stream_options", code="invalid_type")
    fields = dict(temperature=float(temperature), top_k=max(top_k, 0), top_p=float(top_p), min_p=float(min_p),
                  stop=tuple(stop), stop_token_ids=tuple(stop_ids), ignore_eos=ignore_eos, seed=seed, n=n,
                  first_sample=first_sample)
    fields["tools"] = _tools(body)
    return model, fields, max_tokens, stream, include_usage


def _tools(body: dict) -> tuple[str, ...]:
    """ponder's extension `ponder_tools`: ["calc", "python"] (not OpenAI's function-calling `tools`)."""
    names = _get(body, "ponder_tools", lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
                 "a list of tool names", [])
    from ponder.tools import parse_tool_names

    try:
        return tuple(parse_tool_names(names))
    except PonderError as e:
        raise APIError(f"ponder_tools: {e}", param="ponder_tools", code="invalid_value") from None


def _params(fields: dict, max_tokens: int | None, logprobs: int | None, context_length: int) -> SamplingParams:
    fields = {k: v for k, v in fields.items() if k != "tools"}
    try:
        return SamplingParams(max_tokens=max(1, context_length if max_tokens is None else max_tokens),
                              logprobs=logprobs or None, **fields)
    except PonderError as e:  # SamplingParams names the field
        raise api_error(e) from None


def parse_completion(body: dict, context_length: int) -> ParsedRequest:
    _check_fields(body, COMPLETION_HONOURED)
    model, fields, max_tokens, stream, include_usage = _common(body, DEFAULT_COMPLETION_TOKENS)
    logprobs = _ranged(body, "logprobs", is_int, "an integer", None, 0, MAX_TOP_LOGPROBS)
    echo = _get(body, "echo", lambda v: isinstance(v, bool), "a boolean", False)
    prompts = _prompts(body.get("prompt"))
    if len(prompts) * fields["n"] > MAX_BATCH * 4:
        raise APIError("too many prompts times n in one request", param="n", code="invalid_value")
    params = _params(fields, max_tokens, logprobs, context_length)
    return ParsedRequest("completion", model, prompts, params, max_tokens, echo, logprobs, stream, include_usage,
                         _as_ids(body), fields["tools"])


def _as_ids(body: dict) -> bool:
    return _get(body, "return_tokens_as_token_ids", lambda v: isinstance(v, bool), "a boolean", False)


def _prompts(prompt) -> list:
    """str | [str] | [int] | [[int]] -> list of prompts (str or list of token ids)."""
    bad = APIError("prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids",
                   param="prompt", code="invalid_type")
    if prompt is None:
        raise APIError("prompt is required", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, str):
        out = [prompt]
    elif isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            out = list(prompt)
        elif all(is_int(t) for t in prompt):
            out = [list(prompt)]
        elif all(isinstance(p, list) and p and all(is_int(t) for t in p) for p in prompt):
            out = [list(p) for p in prompt]
        else:
            raise bad
    else:
        raise bad
    if len(out) > MAX_BATCH:
        raise APIError(f"at most {MAX_BATCH} prompts per request", param="prompt", code="invalid_value")
    if any(p == "" for p in out):
        raise APIError("prompt must not be empty", param="prompt", code="invalid_value")
    return out


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def parse_chat(body: dict, context_length: int) -> tuple[ParsedRequest, list[dict], bool]:
    """The request, its messages (role + text content) and add_generation_prompt."""
    _check_fields(body, CHAT_HONOURED)
    model, fields, max_tokens, stream, include_usage = _common(body, None)
    want = _get(body, "logprobs", lambda v: isinstance(v, bool), "a boolean", False)
    top = _ranged(body, "top_logprobs", is_int, "an integer", None, 0, MAX_TOP_LOGPROBS)
    if top and not want:
        raise APIError("top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")
    logprobs = (top or 0) if want else None
    add_gen = _get(body, "add_generation_prompt", lambda v: isinstance(v, bool), "a boolean", True)
    messages = parse_messages(body.get("messages"))
    params = _params(fields, max_tokens, logprobs, context_length)
    req = ParsedRequest("chat", model, [], params, max_tokens, False, logprobs, stream, include_usage, _as_ids(body),
                        fields["tools"])
    return req, messages, add_gen


def parse_messages(messages) -> list[dict]:
    if messages is None:
        raise APIError("messages is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise APIError("messages must be a non-empty list", param="messages", code="invalid_type")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(f"{where} must be an object", param=where, code="invalid_type")
        role = m.get("role")
        if role not in _ROLES:
            raise APIError(f"{where}.role must be one of {', '.join(_ROLES)} (tool messages are not supported)",
                           param=f"{where}.role", code="invalid_value")
        if m.get("tool_calls") or m.get("function_call"):
            raise APIError("tool calls are not supported", param=f"{where}.tool_calls", code="unsupported_parameter")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise APIError("only text content parts are supported", param=f"{where}.content[{j}]",
                                   code="unsupported_parameter")
                texts.append(part["text"])
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise APIError(f"{where}.content must be a string or a list of text parts", param=f"{where}.content",
                           code="invalid_type")
        out.append({"role": _ROLES[role], "content": content})
    return out
