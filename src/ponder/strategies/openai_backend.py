"""OpenAIBackend: run the strategies against any OpenAI-compatible server.

Works with ponder's own server, vLLM, SGLang and llama.cpp's server.  Strategies
speak token ids, so:

- prompts go to /v1/completions as token-id lists (the OpenAI spec allows them);
- generated token ids come back with `return_tokens_as_token_ids` (vLLM, ponder),
  or, where a server ignores it, by tokenizing the returned text (documented
  fallback: exact for text that round-trips, which holds for byte-level BPE);
- chats are rendered by the server's /tokenize with `messages` (vLLM, ponder), or
  by a local tokenizer given with --tokenizer;
- forking a partial solution is a new request whose prompt is prompt + partial
  output, as with the local engine; a server with prefix caching (vLLM, SGLang,
  ponder) then recomputes none of it, and reports the reuse in
  usage.prompt_tokens_details.cached_tokens where it can;
- scoring uses `echo` with `logprobs` and `max_tokens: 0` (vLLM, ponder; llama.cpp's
  server cannot, so beam scoring by likelihood is unavailable there);
- samples asked for in rounds (adaptive-majority) use ponder's `first_sample`
  extension; other servers get a derived seed per round, so their rounds are not a
  prefix of one n = N request.

Requests of one batch are sent concurrently, so the server batches them.

The API key comes from the argument, else the environment (PONDER_API_KEY, then
OPENAI_API_KEY), so it need not be on a command line where `ps` shows it.  Every
error names the server by its URL with any credentials in it (user:password@) and
the key replaced by "***".
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

from ponder.engine.sampling_params import SamplingParams
from ponder.errors import PonderError
from ponder.strategies.backend import Backend, Generation, make_sample, usage_of
from ponder.strategies.base import derive_seed


class ServerAnswerError(PonderError):
    """The server answered with an HTTP error status (its message is in the text)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OpenAIBackend(Backend):
    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None,
                 tokenizer=None, timeout: float = 600.0, concurrency: int = 32):
        import httpx

        super().__init__()
        self.base_url = base_url.rstrip("/")
        if api_key is None:
            api_key = os.environ.get("PONDER_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        self._secrets = sorted({x for x in (api_key, *_userinfo(self.base_url)) if x}, key=len, reverse=True)
        self.shown_url = self.redact(self.base_url)  # what errors and stored runs show
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        except (httpx.InvalidURL, ValueError, TypeError) as e:
            raise PonderError(f"invalid --base-url {self.shown_url}: {self.redact(str(e))}") from None
        self.root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.tokenizer = tokenizer  # a ponder Tokenizer, when the server has no /tokenize for chats
        self.pool = ThreadPoolExecutor(concurrency)
        self.model = model or self._first_model()
        self._fingerprint = None

    # -- plumbing -------------------------------------------------------------
    def redact(self, text: str) -> str:
        """text with the credentials (URL user:password, API key) replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _request(self, method: str, url: str, body: dict | None = None) -> dict:
        """One call; any failure is a PonderError naming the (redacted) URL and what the server said."""
        import httpx

        shown = self.redact(url if url.startswith("http") else self.base_url + url)
        try:
            r = self.http.request(method, url, json=body)
        except httpx.HTTPError as e:
            raise PonderError(f"cannot reach {shown}: {self.redact(str(e)) or type(e).__name__}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except Exception:
                message = r.text[:300] or r.reason_phrase
            hint = " (check the API key: --api-key, or PONDER_API_KEY / OPENAI_API_KEY)" if r.status_code == 401 else ""
            raise ServerAnswerError(f"{shown} answered {r.status_code}: {self.redact(str(message))}{hint}",
                                    r.status_code)
        try:
            out = r.json()
        except ValueError:
            raise PonderError(f"{shown} answered {r.status_code} with a body that is not JSON: "
                              f"{self.redact(r.text[:200])!r}") from None
        if not isinstance(out, dict):
            raise PonderError(f"{shown} answered with JSON that is not an object")
        return out

    def _post(self, url: str, body: dict) -> dict:
        return self._request("POST", url, body)

    @contextmanager
    def _reading(self, what: str):
        """A JSON answer of an unexpected shape is a PonderError naming the server, not a traceback."""
        try:
            yield
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise PonderError(f"{self.shown_url} answered {what} in an unexpected shape "
                              f"({type(e).__name__}: {self.redact(str(e))[:100]})") from None

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data")
        if not isinstance(data, list):
            raise PonderError(f"{self.shown_url}/models did not answer with a list of models (no \"data\")")
        if not data:
            raise PonderError(f"{self.shown_url} serves no models")
        if not (isinstance(data[0], dict) and isinstance(data[0].get("id"), str)):
            raise PonderError(f"{self.shown_url}/models answered a model without an id")
        return data[0]["id"]

    # -- Backend ----------------------------------------------------------------
    def model_info(self) -> dict:
        if self._fingerprint is None:
            probe = self._post("/completions", {"model": self.model, "prompt": [1], "max_tokens": 1,
                                                "temperature": 0})
            self._fingerprint = probe.get("system_fingerprint") or ""
        # ponder's fingerprint starts with the model file's sha256; others are opaque
        fp = self._fingerprint
        sha = fp.split("-")[0] if fp and len(fp.split("-")[0]) == 64 else None
        return {"name": self.model, "path": self.shown_url, "sha256": sha, "fingerprint": fp}

    def encode_chat(self, messages):
        if self.tokenizer is not None:
            return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages))
        try:
            out = self._post(self.root + "/tokenize", {"model": self.model, "messages": messages,
                                                       "add_generation_prompt": True})
            if isinstance(out.get("tokens"), list):
                return list(out["tokens"])
        except ServerAnswerError as e:  # a server without chat /tokenize; but a refused key is said as such
            if e.status in (401, 403, 429) or e.status >= 500:
                raise
        raise PonderError(f"{self.redact(self.root)}/tokenize cannot render chats; give a local tokenizer "
                          "(--tokenizer MODEL)")

    def decode(self, token_ids):
        if self.tokenizer is not None:
            return self.tokenizer.decode(token_ids)
        out = self._post(self.root + "/detokenize", {"model": self.model, "tokens": list(token_ids)})
        with self._reading("/detokenize"):
            return str(out["prompt"])

    def encode(self, text: str) -> list[int]:
        return self._encode_text(text)

    def _encode_text(self, text: str) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.encode(text, add_bos=False)
        out = self._post(self.root + "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})
        with self._reading("/tokenize"):
            return [int(t) for t in out["tokens"]]

    def score(self, tokens, start):
        out = self._post("/completions", {"model": self.model, "prompt": list(tokens), "echo": True, "logprobs": 0,
                                          "max_tokens": 0, "temperature": 0})
        with self._reading("a scoring request (echo with logprobs)"):
            lps = out["choices"][0]["logprobs"]["token_logprobs"]
            scores = [float(x) for x in lps[start:len(tokens)]]
        self.usage.prompt_tokens += len(tokens)
        return scores

    def generate(self, prompts, params):
        per = params if isinstance(params, list) else [params] * len(prompts)
        responses = list(self.pool.map(lambda a: self._complete(*a), zip(prompts, per)))
        gens = []
        for prompt, sp, resp in zip(prompts, per, responses):
            with self._reading("a completion"):
                samples = [self._sample(choice, sp) for choice in sorted(resp["choices"], key=lambda c: c["index"])]
                details = (resp.get("usage") or {}).get("prompt_tokens_details") or {}
            usage = usage_of(prompt, [s.generated for s in samples], details.get("cached_tokens"))
            self.usage = self.usage + usage
            gens.append(Generation(list(prompt), samples, usage))
        return gens

    def _complete(self, prompt: list[int], p: SamplingParams) -> dict:
        body = {"model": self.model, "prompt": list(prompt), "n": p.n, "max_tokens": p.max_tokens,
                "temperature": p.temperature, "top_p": p.top_p, "logprobs": 0, "return_tokens_as_token_ids": True}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.top_k:
            body["top_k"] = p.top_k  # vLLM, SGLang, llama.cpp and ponder accept these extensions
        if p.min_p:
            body["min_p"] = p.min_p
        if p.stop_token_ids:
            body["stop_token_ids"] = list(p.stop_token_ids)
        if p.ignore_eos:
            body["ignore_eos"] = True
        if p.first_sample:
            # ponder's server draws samples first_sample.. of the seed; servers without the
            # extension reject the field, so they get a seed of their own for this round instead
            body["first_sample"] = p.first_sample
            if not self._server_is_ponder():
                del body["first_sample"]
                body["seed"] = derive_seed(p.seed, "first_sample", p.first_sample) if p.seed is not None else None
        return self._post("/completions", body)

    def _server_is_ponder(self) -> bool:
        return "-ponder" in (self.model_info().get("fingerprint") or "")

    def _sample(self, choice: dict, params: SamplingParams):
        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            ids = [int(t.split(":", 1)[1]) for t in tokens]
        else:  # the server ignored return_tokens_as_token_ids: recover ids from the text
            ids = self._encode_text(choice["text"])
        logprobs = [float(x) for x in (lp.get("token_logprobs") or [])]
        reason = choice.get("finish_reason") or "length"
        sample = make_sample(ids, choice["text"], logprobs, reason, params, self._eos_ids())
        # vLLM and ponder say why they stopped: stop_reason None means the model's end-of-sequence
        # token (which vLLM leaves out of the output, so make_sample could not see it)
        if reason == "stop" and "stop_reason" in choice and choice["stop_reason"] is None:
            sample.finish_reason = "eos"
        return sample

    def _eos_ids(self) -> set[int]:
        if not hasattr(self, "_eos"):
            self._eos = set(getattr(self.tokenizer, "eos_ids", ()) or ())
            try:
                info = self.http.get(self.root + "/tokenizer_info").json()
                self._eos |= {int(t) for t in info.get("eos_token_ids") or []}
            except Exception:
                pass  # servers without /tokenizer_info: rely on stop_reason
        return self._eos


def _userinfo(url: str) -> list[str]:
    """The credentials a URL carries: its whole "user:password" (a token may stand as the user), and the password."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return []
    if "@" not in netloc:
        return []
    info = netloc.rsplit("@", 1)[0]
    return [info] + ([info.split(":", 1)[1]] if ":" in info else [])
