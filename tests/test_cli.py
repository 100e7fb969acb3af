"""The command line, run in-process."""

import json

from ponder.cli.main import main


def test_generate_json(tiny_llama, capsys):
    assert main(["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_token_ids"] and len(out["token_ids"]) <= 5
    assert out["finish_reason"] in ("stop", "length") and isinstance(out["text"], str)


def test_generate_chat_with_seed_is_reproducible(tiny_llama, capsys):
    args = ["generate", "hi", "--chat", "-m", str(tiny_llama[3]), "--temperature", "0.8", "--seed", "3",
            "--max-tokens", "6", "--json"]
    main(args)
    first = json.loads(capsys.readouterr().out)
    main(args)
    assert json.loads(capsys.readouterr().out)["token_ids"] == first["token_ids"]
    assert first["prompt_token_ids"][0] == 1  # the chat template ran


def test_generate_streams_the_same_text_as_json(tiny_llama, capsys):
    """Plain output is streamed as it becomes final: the same text as --json, also cut at a stop string."""
    base = ["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "12", "--temperature", "0.9",
            "--seed", "5"]
    assert main(base + ["--json"]) == 0
    text = json.loads(capsys.readouterr().out)["text"]
    assert main(base) == 0
    assert capsys.readouterr().out == text + "\n"
    stop = next(ch for ch in text[1:] if ch.isascii() and ch.isalnum())  # this seed's text has some
    assert main(base + ["--stop", stop, "--json"]) == 0
    cut = json.loads(capsys.readouterr().out)["text"]
    assert main(base + ["--stop", stop]) == 0
    assert capsys.readouterr().out == cut + "\n" and stop not in cut and len(cut) < len(text)


def test_models_lists_default(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["generate", "x", "-m", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_the_parser_and_errors_leave_the_engine_unimported():
    """`ponder --help`, `runs` and the start of `generate` import neither Numba nor the strategies to parse."""
    import subprocess
    import sys

    code = ("import sys, ponder.cli.main as m; m.build_parser().parse_args(['generate', 'hi']); "
            "from ponder import PonderError; "
            "print(sorted(k for k in ('numba', 'ponder.engine', 'ponder.strategies', 'ponder.tasks', 'rich') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_arguments_are_there_when_run_is_parsed(capsys):
    """`run`'s arguments are added on first use: parsing and its help still see all of them."""
    from ponder.cli.main import build_parser

    args = build_parser().parse_args(["run", "--strategy", "majority", "--samples", "4", "--prompt-style", "steps"])
    assert (args.strategy, args.samples, args.prompt_style) == ("majority", 4, "steps")
    try:
        build_parser().parse_args(["run", "--help"])
    except SystemExit:
        pass
    assert "--strategy" in capsys.readouterr().out


def test_main_turns_the_garbage_collector_back_on(tiny_llama, capsys):
    """main() turns the collector off for start-up: it is on again after a run, a failed one included."""
    import gc

    assert main(["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "2"]) == 0
    assert gc.isenabled()
    assert main(["generate", "x", "-m", "no-such-model"]) == 2
    assert gc.isenabled()
    assert main(["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "2", "--json"]) == 0
    assert gc.isenabled()


def test_numpy_is_imported_with_one_blas_thread_and_the_environment_left_alone():
    """The CLI keeps OpenBLAS's pool to one thread (no BLAS on the engine's path) without changing the
    environment that the processes it starts see (llama.cpp's side of `bench start`)."""
    import subprocess
    import sys

    code = ("import os, sys; from ponder.cli import main as m; m._import_numpy_with_one_blas_thread(); "
            "print('numpy' in sys.modules, 'OPENBLAS_NUM_THREADS' in os.environ)\n"
            "try:\n    import threadpoolctl\nexcept ImportError:\n    print(None)\nelse:\n"
            "    print([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=env).stdout.splitlines()
    assert lines[0] == "True False"
    assert lines[1] in ("None", "[]", "[1]")  # [] where NumPy's BLAS is not OpenBLAS
