"""The pieces of `ponder bench` (not its timings): prompts, headers, the ttc workload, voting and report."""

import io

import pytest
from rich.console import Console

from ponder import Engine
from ponder.bench import speed, suite
from ponder.bench.ttc import TTCFigure, Workload, majority_correct, print_ttc, run_ponder, summarize
from ponder.strategies import Judge
from ponder.tasks import load_problems


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama):
    return Engine.from_pretrained(str(tiny_llama[2]))


def test_prompt_ids_have_the_length_and_differ_by_variant(tiny_engine):
    a, b = speed.prompt_ids(tiny_engine.tokenizer, 50, 1), speed.prompt_ids(tiny_engine.tokenizer, 50, 2)
    assert len(a) == len(b) == 50 and a[0] != b[0] and a[1:] == b[1:]


def test_header_names_the_instruction_set_and_threads(tiny_engine):
    out = suite._header("decode", tiny_engine.model, 2, tiny_engine)
    # the set in use first, then why when it was forced (PONDER_ISA): "avx2 (forced by ...)"
    assert out["isa"].split()[0] == tiny_engine.info().isa and out["threads"] == 2 and out["benchmark"] == "decode"


def test_ttc_workload_is_greedy_then_majority():
    greedy, maj = Workload(problems=5, samples=8, max_tokens=64).configs("m")
    assert (greedy.strategy, maj.strategy) == ("greedy", "majority")
    assert maj.options == {"samples": 8, "max_tokens": 64} and greedy.options == {"max_tokens": 64}
    assert greedy.problems == maj.problems == 5 and greedy.model == "m"


def test_ttc_prompts_are_the_runners(tiny_engine):
    from ponder.runner.execute import chat, prepare, shots_of
    from ponder.strategies import EngineBackend

    work = Workload(problems=3)
    problems, prompts = work.prompts(EngineBackend(tiny_engine))
    cfg = work.configs(tiny_engine.model.name)[0]
    want, _, _ = prepare(cfg)
    assert [p.id for p in problems] == [p.id for p in want] and work.suite == "words"
    shots = shots_of(cfg, want)
    assert prompts == [EngineBackend(tiny_engine).encode_chat(chat(cfg, p, shots)) for p in want]


def test_majority_correct_votes_like_the_strategy():
    problem = load_problems("arithmetic", difficulty=1, count=1)[0][0]
    judge = Judge(problem)
    right = f"The answer is {problem.answer}"
    wrong = f"The answer is {problem.answer}1"
    assert judge.check(right)[1] and not judge.check(wrong)[1]
    assert majority_correct(judge, [wrong, right, right])
    assert not majority_correct(judge, [wrong, wrong, right])
    assert not majority_correct(judge, ["no idea", "none"])


def test_run_ponder_goes_through_the_runner(tiny_engine):
    work = Workload(problems=2, samples=2, max_tokens=4)
    fig = run_ponder(tiny_engine, work)
    assert fig.engine == "ponder" and fig.wall_s > 0
    # greedy: up to 4 tokens per problem; majority: 2 samples of up to 4 each
    assert 2 <= fig.generated_tokens <= 2 * 4 + 2 * 2 * 4
    assert 0 <= fig.greedy_accuracy <= 1 and 0 <= fig.majority_accuracy <= 1


def test_summary_ratio_and_report():
    out = summarize({"workload": dict(Workload().__dict__)},
                    [TTCFigure("ponder", 10.0, 1000, 0.5, 0.6), TTCFigure("llama.cpp", 30.0, 900, 0.5, 0.55)])
    assert out["ratio_vs_llama_cpp"] == 3.0 and out["results"][0]["tok_s"] == 100.0
    buf = io.StringIO()
    print_ttc(out, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "3.00× faster" in text and "majority@8" in text and "llama.cpp" in text


def test_spec_decode_reports_acceptance_and_checks_the_answers(tiny_llama):
    from ponder.bench.spec_decode import print_spec, run_spec_decode

    out = run_spec_decode(str(tiny_llama[2]), 1, "recycling", None, tokens=12, repeats=1)
    off, on = out["results"]
    assert off["engine"] == "ponder" and on["engine"] == "ponder recycling"
    assert off["tokens_per_step"] == 1.0 and on["tokens_per_step"] >= 1.0
    assert 0 <= out["accepted"] <= out["drafted"] and out["questions"] == 8
    buf = io.StringIO()
    print_spec(out, Console(file=buf, width=200))
    assert "tokens per step" in buf.getvalue() and "speculation on / off" in buf.getvalue()


def test_bench_start_times_fresh_processes(tiny_engine, tiny_llama):
    """`ponder bench start`: fresh `ponder generate` processes timed after a warm-up; the report names the goal."""
    from ponder import SamplingParams
    from ponder.bench.start import print_start, run_start

    tiny_engine.generate("hi", SamplingParams(max_tokens=1))  # its kernels are in the cache: the children load them
    out = run_start(str(tiny_llama[2]), 1, None, repeats=2)
    (r,) = out["results"]
    assert r["engine"] == "ponder" and len(r["wall_runs"]) == len(r["cpu_runs"]) == 2
    assert 0 < r["wall_min_s"] <= r["wall_median_s"] and r["cpu_median_s"] > 0
    assert out["isa"].split()[0] == tiny_engine.info().isa and "generate hi --max-tokens 1" in out["command"]
    buf = io.StringIO()
    print_start(out, Console(file=buf, width=200))
    assert "fresh processes" in buf.getvalue() and "ponder" in buf.getvalue()


def test_bench_start_reports_a_failing_child_as_an_error(tmp_path):
    from ponder.bench.start import run_start
    from ponder.errors import PonderError

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 40)
    with pytest.raises(PonderError, match="exited with 2"):
        run_start(str(bad), 1, None, repeats=1)


def test_bench_start_against_llama_cpp(tiny_engine, tiny_llama):
    """--vs llama.cpp: the yardstick is a fresh process too, alternated with ponder's; the ratio is of medians."""
    pytest.importorskip("llama_cpp")
    from ponder import SamplingParams
    from ponder.bench.start import run_start

    tiny_engine.generate("hi", SamplingParams(max_tokens=1))
    out = run_start(str(tiny_llama[2]), 1, "llama.cpp", repeats=1)
    p, q = out["results"]
    assert (p["engine"], q["engine"]) == ("ponder", "llama.cpp")
    assert out["ratio_vs_llama_cpp"] == p["wall_median_s"] / q["wall_median_s"]
