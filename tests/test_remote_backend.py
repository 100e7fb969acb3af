"""Remote equals local: `ponder run --backend openai` against `ponder serve` gives the local backend's results."""

import pytest

from ponder import Engine
from ponder.loading.model_files import load_model
from ponder.runner import RunConfig, execute
from ponder.server.process import ServerProcess
from ponder.store import RunStore
from ponder.strategies import EngineBackend
from ponder.strategies.openai_backend import OpenAIBackend


@pytest.fixture(scope="module")
def server(tiny_llama):
    with ServerProcess(str(tiny_llama[2])) as srv:
        yield srv


def _stored(store, run_id):
    return [(s["problem_idx"], s["sample_idx"], s["token_ids"], s["answer"], s["correct"])
            for s in store.samples(run_id)]


@pytest.mark.parametrize("strategy,options", [
    ("greedy", {}),
    ("majority", {"samples": 3, "max_tokens": 16}),
    ("best-of-n", {"samples": 3, "select": "logprob", "max_tokens": 16}),
    ("short-m@k", {"samples": 4, "m": 2, "max_tokens": 16}),
    ("beam", {"max_tokens": 16}),
    ("adaptive-majority", {"samples": 6, "batch": 2, "max_tokens": 16}),
])
def test_remote_run_equals_local_run(tmp_path, tiny_llama, server, strategy, options):
    config = RunConfig(suite="arithmetic", difficulty=1, problems=3, strategy=strategy, seed=5,
                       model=str(tiny_llama[2]), options={"max_tokens": 12, **options})
    store = RunStore(str(tmp_path / "runs.sqlite"))
    local = execute(config, EngineBackend(Engine(load_model(str(tiny_llama[2])))), store)
    remote_backend = OpenAIBackend(server.url + "/v1")
    remote = execute(config, remote_backend, store)
    assert _stored(store, remote) == _stored(store, local)
    assert store.run(remote)["model_sha256"] == store.run(local)["model_sha256"]
