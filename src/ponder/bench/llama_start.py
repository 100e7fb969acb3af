"""The yardstick of `ponder bench start`: a fresh process that loads a GGUF with llama-cpp-python and
generates one token, as a user's script would.

Run as a file (`python .../llama_start.py MODEL.gguf THREADS [--no-extra-bufts]`), never as
`-m ponder.bench.llama_start`: that would import the ponder package first, and the point is
to time llama-cpp-python's start alone.  So this file imports nothing of ponder.

--no-extra-bufts turns off llama.cpp's extra buffer types (its AMX weight repacking): on a
KVM guest of an AMX Xeon that repacking died with SIGILL although the CPU reports AMX
(2026-12-01).  The caller passes it only on CPUs with AMX (ponder.bench.speed.model_params
holds the same rule for the in-process benchmarks); elsewhere llama.cpp runs as shipped.
"""

import sys


def main(argv: list[str]) -> int:
    path, threads = argv[0], int(argv[1])
    import llama_cpp

    if "--no-extra-bufts" in argv[2:]:
        default = llama_cpp.llama_cpp.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        llama_cpp.llama_cpp.llama_model_default_params = params
    llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, verbose=False)
    out = llm("hi", max_tokens=1, temperature=0.0)
    print(out["choices"][0]["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
