"""A bounded load test of `ponder serve` (tiny model): many clients, one engine.

500 requests from 32 concurrent clients: seeded completions and chats of mixed lengths (plain and
streamed, some with n=2 or stop strings), echo scoring, requests the client abandons mid-way, and
malformed requests.  Every well-formed request must complete or get 429; none is lost or answered
twice; seeded outputs equal the same requests sent alone; the server's memory stays bounded; and
afterwards nothing is left running or holding KV blocks.
"""

import asyncio
import json
import random
import time

import httpx
import pytest

from ponder.server.process import ServerProcess

N_REQUESTS = 500
CLIENTS = 32
MAX_QUEUE = 28
WORDS = "the cat and an is in at hat sat on mat dog ran far er tea".split()


def _templates(rng: random.Random) -> list[dict]:
    out = []
    for k in range(40):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        body = {"max_tokens": rng.choice([1, 4, 16, 32, 64, 128]), "temperature": rng.choice([0.0, 0.7, 1.0]),
                "seed": k, "n": 2 if k % 5 == 0 else 1}
        if k % 4 == 0:
            body["stop"] = [rng.choice(["e", "the", "a"])]
        if k % 7 == 3:
            out.append(("chat", {"messages": [{"role": "user", "content": prompt}], **body}))
        else:
            out.append(("completions", {"prompt": prompt, **body}))
    return out


MALFORMED = [
    (b"{oops", 400), (json.dumps({"prompt": "x", "max_tokens": "9"}).encode(), 400),
    (json.dumps({"prompt": "x", "n": 500}).encode(), 400), (json.dumps({"prompt": "x", "model": "nope"}).encode(), 404),
    (json.dumps({"prompt": "the " * 400}).encode(), 413),
    (json.dumps({"prompt": "x", "logit_bias": {"1": 5}}).encode(), 400),
]


def _texts(kind: str, body: dict) -> list[str]:
    key = "message" if kind == "chat" else None
    return [c["message"]["content"] if key else c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]


async def _stream_texts(client, kind, payload) -> tuple[int, list[str] | dict]:
    async with client.stream("POST", f"/v1/{'chat/completions' if kind == 'chat' else 'completions'}",
                             json={**payload, "stream": True}) as r:
        if r.status_code != 200:
            return r.status_code, json.loads(await r.aread())
        texts: dict[int, str] = {}
        ids = set()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            ids.add(chunk["id"])
            for c in chunk["choices"]:
                piece = (c["delta"].get("content") or "") if kind == "chat" else c["text"]
                texts[c["index"]] = texts.get(c["index"], "") + piece
        assert len(ids) == 1
        return 200, {"id": ids.pop(), "texts": [texts.get(i, "") for i in range(len(texts))]}


@pytest.mark.slow
def test_load(tiny_llama, tmp_path):
    rng = random.Random(0)
    templates = _templates(rng)
    plain = [k for k, (kind, _) in enumerate(templates) if kind == "completions"]
    plan = []
    for i in range(N_REQUESTS):
        r = rng.random()
        if r < 0.70:
            plan.append(("seeded", rng.randrange(len(templates)), rng.random() < 0.5))
        elif r < 0.80:
            plan.append(("echo", rng.choice(plain), False))
        elif r < 0.90:
            plan.append(("cancel", i, rng.random() < 0.5))
        else:
            plan.append(("malformed", rng.randrange(len(MALFORMED)), False))

    log = tmp_path / "serve.log"
    with ServerProcess(str(tiny_llama[2]), "--max-queue", str(MAX_QUEUE), log_path=str(log)) as srv:
        rss = {"start": srv.rss_bytes(), "samples": []}
        results = asyncio.run(_drive(srv, templates, plan, rss))
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            alone = [_send_alone(c, kind, body) for kind, body in templates]
            echo_alone = [_echo(c, templates[k][1]) if templates[k][0] == "completions" else None
                          for k in range(len(templates))]
            for _ in range(100):  # the abandoned requests are aborted within a step or two
                m = _metrics(c)
                if m["ponder_running_requests"] == 0 and m["ponder_open_requests"] == 0:
                    break
                time.sleep(0.05)
        rss["end"] = srv.rss_bytes()

    # nothing lost, nothing answered twice
    assert len(results) == N_REQUESTS and sorted(r["i"] for r in results) == list(range(N_REQUESTS))
    ids = [r["id"] for r in results if r.get("id")]
    assert len(ids) == len(set(ids))
    counts = {"ok": 0, "429": 0, "cancelled": 0, "malformed": 0}
    for r in results:
        what, k, _ = plan[r["i"]]
        if what == "malformed":
            assert r["status"] == MALFORMED[k][1], r
            counts["malformed"] += 1
        elif what == "cancel":
            counts["cancelled"] += 1
        elif r["status"] == 429:
            assert r["body"]["error"]["code"] == "queue_full"
            counts["429"] += 1
        else:
            assert r["status"] == 200, r
            counts["ok"] += 1
            if what == "seeded":
                assert r["texts"] == _texts(templates[k][0], alone[k]), (r, alone[k])
            else:
                assert r["logprobs"] == echo_alone[k], k
    # the server is idle and has released every KV block
    assert m["ponder_running_requests"] == 0 and m["ponder_queue_depth"] == 0 and m["ponder_open_requests"] == 0
    assert m["ponder_kv_blocks_used"] == 0
    assert m['ponder_requests_finished_total{reason="abort"}'] >= 1
    # memory stays bounded: no growth from the first third of the run to its end
    peak = max(rss["samples"])
    third = rss["samples"][len(rss["samples"]) // 3]
    assert peak - rss["start"] < 400 << 20
    assert rss["end"] - third < 64 << 20
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    lat = sorted(r["t1"] - r["t0"] for r in results if r["status"] == 200 and plan[r["i"]][0] == "seeded")
    summary = {"requests": N_REQUESTS, "clients": CLIENTS, "max_queue": MAX_QUEUE, **counts,
               "wall_s": round(wall, 2), "req_per_s": round(N_REQUESTS / wall, 1),
               "seeded_latency_p50_s": round(lat[len(lat) // 2], 3),
               "seeded_latency_p95_s": round(lat[int(len(lat) * .95)], 3),
               "generated_tokens": int(m["ponder_generation_tokens_total"]),
               "prefix_cache_hit_rate": round(m["ponder_prefix_cache_hit_rate"], 3),
               "rss_start_mb": round(rss["start"] / 2**20, 1), "rss_peak_mb": round(peak / 2**20, 1),
               "rss_end_mb": round(rss["end"] / 2**20, 1)}
    print("\nLOAD TEST SUMMARY " + json.dumps(summary))
    assert counts["ok"] > N_REQUESTS // 2  # the queue limit does not turn everything away


def _send_alone(c, kind, body) -> dict:
    r = c.post(f"/v1/{'chat/completions' if kind == 'chat' else 'completions'}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _echo(c, body) -> dict:
    r = c.post("/v1/completions", json={"prompt": body["prompt"], "max_tokens": 0, "echo": True, "logprobs": 2})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["logprobs"]


def _metrics(c) -> dict:
    out = {}
    for line in c.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def _drive(srv, templates, plan, rss) -> list[dict]:
    queue: asyncio.Queue = asyncio.Queue()
    for i, item in enumerate(plan):
        queue.put_nowait((i, item))
    results: list[dict] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def sample_rss():
        while True:
            rss["samples"].append(srv.rss_bytes())
            await asyncio.sleep(0.25)

    async def worker(client: httpx.AsyncClient):
        while not queue.empty():
            i, (what, k, flag) = queue.get_nowait()
            t0 = time.monotonic()
            out = {"i": i, "t0": t0}
            try:
                if what == "seeded":
                    kind, body = templates[k]
                    if flag:
                        status, got = await _stream_texts(client, kind, body)
                        out.update(status=status, **({"texts": got["texts"], "id": got["id"]} if status == 200
                                                     else {"body": got}))
                    else:
                        r = await client.post(f"/v1/{'chat/completions' if kind == 'chat' else 'completions'}",
                                              json=body)
                        out.update(status=r.status_code, body=r.json())
                        if r.status_code == 200:
                            out.update(texts=_texts(kind, r.json()), id=r.json()["id"])
                elif what == "echo":
                    r = await client.post("/v1/completions", json={"prompt": templates[k][1]["prompt"],
                                                                   "max_tokens": 0, "echo": True, "logprobs": 2})
                    out.update(status=r.status_code, body=r.json())
                    if r.status_code == 200:
                        out.update(logprobs=r.json()["choices"][0]["logprobs"], id=r.json()["id"])
                elif what == "cancel":
                    payload = {"prompt": "the cat " * 8, "max_tokens": 200, "ignore_eos": True, "seed": i}
                    if flag:  # streamed: read one chunk, hang up
                        async with client.stream("POST", "/v1/completions", json={**payload, "stream": True}) as r:
                            out["status"] = r.status_code
                            async for line in r.aiter_lines():
                                if line.startswith("data: {"):
                                    break
                    else:  # plain: give up waiting
                        try:
                            r = await client.post("/v1/completions", json=payload, timeout=0.3)
                            out["status"] = r.status_code
                        except httpx.TimeoutException:
                            out["status"] = "timeout"
                else:
                    data, _ = MALFORMED[k]
                    r = await client.post("/v1/completions", content=data, headers={"content-type": "application/json"})
                    out.update(status=r.status_code, body=r.json())
            except httpx.HTTPError as e:
                out.update(status="client_error", error=repr(e))
            out["t1"] = time.monotonic()
            results.append(out)
            if out.get("status") == 429:
                await asyncio.sleep(0.1)  # a polite client backs off

    sampler = asyncio.ensure_future(sample_rss())
    async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(CLIENTS)))
    sampler.cancel()
    return results
