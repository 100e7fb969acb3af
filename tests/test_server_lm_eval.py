"""lm-eval's `local-completions` model, unmodified, runs a log-likelihood task against `ponder serve`.

The task (tests/data/lm_eval/) is a tiny multiple-choice set.  lm-eval tokenizes through the server's
/tokenize, /detokenize and /tokenizer_info (its "remote" tokenizer backend, detected automatically),
sends token-id prompts with echo + logprobs, and sums the continuation's logprobs.  Its accuracy and
every per-choice log-likelihood must equal what ponder's Python API (Engine.score) gives directly.
"""

import json
import os

import pytest

from ponder.server.process import ServerProcess

TASK_DIR = os.path.join(os.path.dirname(__file__), "data", "lm_eval")


@pytest.mark.slow
def test_lm_eval_loglikelihood_task(tiny_llama, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.chdir(TASK_DIR)  # the task's data_files path is relative
    from lm_eval.tasks import TaskManager

    gguf = str(tiny_llama[2])
    with ServerProcess(gguf, log_path=str(tmp_path / "serve.log")) as srv:
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={srv.url}/v1/completions,model={gguf},num_concurrent=2,max_retries=1,"
                       "tokenized_requests=True",
            tasks=["ponder_tiny_mc"], task_manager=TaskManager(include_path=TASK_DIR), batch_size=4,
            log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    acc = out["results"]["ponder_tiny_mc"]["acc,none"]
    samples = out["samples"]["ponder_tiny_mc"]

    # The same items through the Python API: sum of the continuation's logprobs given the context.
    from ponder import Engine

    engine = Engine.from_pretrained(gguf)
    tok = engine.tokenizer
    with open(os.path.join(TASK_DIR, "ponder_tiny_mc.jsonl")) as f:
        docs = [json.loads(line) for line in f]
    correct = 0
    for doc, sample in zip(docs, sorted(samples, key=lambda s: s["doc_id"])):
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            ctx_ids = tok.encode(context, add_bos=False)
            whole = tok.encode(context + " " + choice, add_bos=False)  # lm-eval encodes the pair whole
            rows = engine.score(whole, len(ctx_ids))
            scores.append(sum(r["logprob"] for r in rows))
        correct += max(range(len(scores)), key=scores.__getitem__) == doc["answer"]
        served = [r[0][0] for r in sample["resps"]]  # (loglikelihood, is_greedy) per choice
        assert served == scores, (doc, served, scores)  # bit for bit
    assert acc == correct / len(docs)
    print(f"\nlm-eval ponder_tiny_mc acc={acc:.4f} ({correct}/{len(docs)}) == Engine.score")
