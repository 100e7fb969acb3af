"""Probe a live `ponder serve` with malformed, hostile and heavy requests; count the bad outcomes.

    python scripts/probe_server.py http://127.0.0.1:8000 [--key KEY] [--fuzz 300] [--load 300]

A bad outcome is a 5xx, a request that hangs (no answer within --timeout), an error without an
OpenAI-style body, or a traceback in a body.  Every well-formed request must get 200 or 429.
Categories: body parsing, numeric extremes of every field (sampler extremes included), HTTP methods,
huge prompts and bodies (with /health polled meanwhile), authentication, seeded fuzz, and load (well-formed
and hostile requests mixed, many at once).  Exit status 1 when anything was bad.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter

import httpx

INT_MAX = 2**63 - 1
ROUTES = {"/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST", "/tokenize": "POST",
          "/detokenize": "POST", "/tokenizer_info": "GET", "/health": "GET", "/metrics": "GET"}
RAW = [  # (path, body) that must be 4xx
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": ' + b"9" * 5001 + b"}"),
    ("/v1/completions", b"[" * 100_000),
    ("/v1/completions", b"{" * 50_000),
    ("/v1/completions", b'{"prompt": "hi \\ud800"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'),
    ("/tokenize", b'{"prompt": "hi \\ud800"}'),
    ("/tokenize", b'{"messages": [{"role": "user", "content": "\\udfff"}]}'),
    ("/v1/completions", b'{"prompt": "hi", "temperature": NaN}'),
    ("/v1/completions", b'{"prompt": "hi", "temperature": -Infinity}'),
    ("/v1/completions", b'{"prompt": "hi", "top_p": 1e999}'),
    ("/v1/completions", b'{"prompt": "hi", "first_sample": 1180591620717411303424}'),
    ("/v1/completions", b'\xff\xfe\x00'),
    ("/v1/completions", b''),
    ("/v1/completions", b'null'),
    ("/v1/completions", b'"prompt"'),
    ("/detokenize", b'{"tokens": [1, -1]}'),
    ("/detokenize", b'{"tokens": "abc"}'),
    ("/tokenize", b'{"prompt": "x", "model": ["a"]}'),
]
EXTREMES = {
    "max_tokens": [-1, 0, INT_MAX, 2**64, 1.5, "5", True],
    "n": [0, 65, INT_MAX, 2**64],
    "seed": [-1, INT_MAX, 2**63],
    "temperature": [1e-40, 5e-324, 1e-300, 1e308, -1e-300, 2**63],
    "top_p": [0, 5e-324, 1e-40, 1.0000000000000002],
    "top_k": [-2, -1, 1, INT_MAX, 2**64],
    "min_p": [5e-324, 0.5, 1, 1.0000000000000002, -1e-300],
    "logprobs": [-1, 0, 20, 21, INT_MAX],
    "first_sample": [-1, INT_MAX - 2, INT_MAX, 2**64],
    "stop_token_ids": [[-1], [INT_MAX], [0] * 10000],
    "stop": ["", ["a"] * 17, ["x" * 100_000]],
}
SAMPLER = [  # the probe's reproductions: must be 200 (behaving like greedy) or 400 naming the field
    {"temperature": 1e-40, "min_p": 0.5, "seed": 1},
    {"temperature": 1e-40, "top_p": 0.5, "seed": 1},
    {"temperature": 1e-40, "seed": 1},
    {"temperature": 5e-324, "top_k": 5, "seed": 1},
]


RAW_HTTP = [  # malformed HTTP on a raw socket: any 4xx or a closed connection is fine; a 5xx or silence is not
    b"GARBAGE\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 100_000 + b"\r\n\r\n",
    b"GET /v1/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n",
]


async def raw_http(p: "Probe", host: str, port: int, data: bytes, timeout: float) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(200), timeout)
        writer.close()
    except asyncio.TimeoutError:
        p._bad("http", f"HANG raw {data[:60]!r}")
        return
    except OSError:
        head = b""  # the server closed the connection: fine
    status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"closed"
    p.counts[("http", status.decode())] += 1
    if status.startswith(b"5"):
        p._bad("http", f"{status.decode()} raw {data[:60]!r}")


class Probe:
    def __init__(self, url: str, key: str | None, timeout: float):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.c = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=64))
        self.key = key
        self.counts: Counter = Counter()
        self.bad: list[str] = []

    async def send(self, category: str, method: str, path: str, body=None, raw: bytes | None = None,
                   ok=(200,), headers=None) -> httpx.Response | None:
        """One request; records its outcome, and a bad one with why."""
        t = time.perf_counter()
        try:
            if raw is not None:
                r = await self.c.request(method, path, content=raw,
                                         headers={"content-type": "application/json", **(headers or {})})
            else:
                r = await self.c.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            shown = (raw if raw is not None else json.dumps(body).encode())[:120]
            self._bad(category, f"HANG {method} {path} {shown!r} ({time.perf_counter() - t:.0f} s)")
            return None
        except httpx.HTTPError as e:
            self._bad(category, f"CONNECTION {method} {path}: {e!r}")
            return None
        self.counts[(category, r.status_code)] += 1
        text = r.text
        if r.status_code >= 500:
            self._bad(category, f"{r.status_code} {method} {path} {(raw or json.dumps(body).encode())[:120]!r}")
        elif "Traceback" in text or 'File "' in text:
            self._bad(category, f"TRACEBACK {method} {path}")
        elif r.status_code >= 400 and method != "HEAD":
            try:
                err = r.json()["error"]
                assert set(err) >= {"message", "type", "param", "code"}
            except Exception:
                self._bad(category, f"NOT OPENAI-STYLE {r.status_code} {method} {path}: {text[:100]!r}")
        expected = 400 <= r.status_code < 500 if ok == "4xx" else r.status_code in ok
        if not expected and r.status_code < 500:
            self._bad(category, f"UNEXPECTED {r.status_code} (wanted {ok}) {method} {path} "
                                f"{(raw or json.dumps(body).encode())[:120]!r}: {text[:160]!r}")
        return r

    def _bad(self, category: str, why: str) -> None:
        self.counts[(category, "bad")] += 1
        self.bad.append(f"[{category}] {why}")


def fuzz_cases(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    valid = {"/v1/completions": {"prompt": "the cat", "max_tokens": 2, "seed": 1},
             "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "seed": 1},
             "/tokenize": {"prompt": "the cat"}, "/detokenize": {"tokens": [5, 6, 7]}}
    literals = ["NaN", "1e999", "9" * 30, '"\\ud800"', "[" * 40 + "]" * 40, "null", "true", "[]", "{}", "-1",
                "5e-324", "18446744073709551616", '"x"', '[[1], []]']
    fields = ["prompt", "messages", "max_tokens", "n", "seed", "temperature", "top_p", "top_k", "min_p", "stop",
              "logprobs", "echo", "stream", "first_sample", "tokens", "model", "stream_options", "top_logprobs"]
    out = []
    for _ in range(n):
        path = rng.choice(list(valid))
        body = dict(valid[path])
        if rng.random() < 0.5:
            body[rng.choice(fields)] = "@@"
            out.append((path, json.dumps(body).replace('"@@"', rng.choice(literals)).encode()))
        else:
            raw = bytearray(json.dumps(body).encode())
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(raw) + 1)
                if rng.random() < 0.5:
                    del raw[at:at + rng.randint(1, 3)]
                else:
                    raw[at:at] = bytes([rng.choice(b'{}[]",:\\0123456789e.- \xff')])
            out.append((path, bytes(raw)))
    return out


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--key", default=None)
    ap.add_argument("--fuzz", type=int, default=300)
    ap.add_argument("--load", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    p = Probe(args.url.rstrip("/"), args.key, args.timeout)
    t0 = time.time()

    for path, raw in RAW:
        await p.send("parsing", "POST", path, raw=raw, ok="4xx")
    for field, values in EXTREMES.items():
        for v in values:
            for path, base in (("/v1/completions", {"prompt": "the cat"}),
                               ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
                body = {**base, "max_tokens": 3, field: v}
                if field == "max_tokens":
                    body["stop"] = [" ", "."]  # a huge max_tokens is valid: stop at the first word, not at 8K tokens
                await p.send("extremes", "POST", path, body, ok=(200, 400))
    for extra in SAMPLER:
        r = await p.send("sampler", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2, **extra},
                         ok=(200, 400))
        if r is not None and r.status_code == 200:
            greedy = await p.send("sampler", "POST", "/v1/completions",
                                  {"prompt": "hi", "max_tokens": 2, "temperature": 0})
            if greedy is not None and r.json()["choices"][0]["text"] != greedy.json()["choices"][0]["text"]:
                p._bad("sampler", f"{extra} is not greedy: {r.json()['choices'][0]['text']!r}")
    for path, allowed in ROUTES.items():
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            if method != allowed and not (method == "HEAD" and allowed == "GET"):
                await p.send("methods", method, path, ok=(405,))
    await p.send("methods", "GET", "/v1/nothing", ok=(404,))

    # huge prompts and bodies, with /health polled meanwhile
    for body in ({"prompt": "the cat sat on the mat " * 230_000, "max_tokens": 1},
                 {"prompt": " ".join(f"w{i % 7919}" for i in range(60_000)), "max_tokens": 1},
                 {"messages": [{"role": "user", "content": "hello there " * 500_000}]},
                 {"prompt": [20 + i % 200 for i in range(20_000)], "max_tokens": 1}):
        task = asyncio.ensure_future(p.send("huge", "POST", "/v1/chat/completions" if "messages" in body
                                            else "/v1/completions", body, ok=(413,)))
        worst = 0.0
        while not task.done():
            t = time.perf_counter()
            await p.send("huge-health", "GET", "/health")
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0.02)
        await task
        if worst > 1.0:
            p._bad("huge", f"/health took {worst:.1f} s while a huge prompt was handled")
    await p.send("huge", "POST", "/v1/completions", raw=b'{"prompt": "' + b"a" * (17 << 20) + b'"}', ok=(413,))

    url = httpx.URL(args.url)
    for data in RAW_HTTP:
        await raw_http(p, url.host, url.port or 80, data, 30)

    if args.key:
        await p.send("auth", "POST", "/v1/completions", {"prompt": "hi"}, ok=(401,),
                     headers={"Authorization": "Bearer wrong"})
        await p.send("auth", "GET", "/v1/models", ok=(401,), headers={"Authorization": "Basic eDp5"})

    rng = random.Random(7)
    for path, raw in fuzz_cases(rng, args.fuzz):
        await p.send("fuzz", "POST", path, raw=raw, ok=(200, 400, 404, 413))

    # load: well-formed (200 or 429) and hostile (4xx) requests at once
    jobs = []
    for i in range(args.load):
        k = rng.random()
        if k < 0.6:
            body = {"prompt": " ".join(rng.choice(["the", "cat", "sat", "on", "mat"]) for _ in range(rng.randint(1, 30))),
                    "max_tokens": rng.choice([1, 8, 32]), "seed": i, "temperature": rng.choice([0, 0.7]),
                    "n": rng.choice([1, 1, 2]), "stream": rng.random() < 0.3}
            jobs.append(p.send("load", "POST", "/v1/completions", body, ok=(200, 429)))
        elif k < 0.75:
            jobs.append(p.send("load", "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2,
                                                                   **rng.choice(SAMPLER)}, ok=(200, 400, 429)))
        else:
            path, raw = rng.choice(RAW[:11])
            jobs.append(p.send("load", "POST", path, raw=raw, ok="4xx"))
    await asyncio.gather(*jobs)
    metrics = (await p.c.get("/metrics")).text
    running = [line for line in metrics.splitlines() if line.startswith(("ponder_running_requests ",
                                                                           "ponder_queue_depth "))]
    health = await p.send("after", "GET", "/health")

    total = sum(v for (c, s), v in p.counts.items() if s != "bad")
    print(f"{total} requests in {time.time() - t0:.0f} s; after: {running}, health "
          f"{health.status_code if health is not None else 'none'}")
    for cat in dict.fromkeys(c for c, _ in p.counts):
        row = {s: v for (c, s), v in sorted(p.counts.items(), key=str) if c == cat}
        print(f"  {cat:12s} {row}")
    print(f"bad outcomes: {len(p.bad)}")
    for b in p.bad[:50]:
        print("  " + b)
    await p.c.aclose()
    return 1 if p.bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
