"""Write tests/data/tokenizer_corpus.json: llama.cpp's tokenization of a varied corpus.

Run once with the bench extra installed (pip install 'ponder[bench]'):
    python scripts/make_tokenizer_reference.py [MODEL.gguf]
The tests compare ponder's tokenizer against these ids without needing llama.cpp.
"""

import json
import sys

from llama_cpp import Llama

CORPUS = [
    "Hello, world!",
    "What is 17 + 25? Answer:",
    "The year 2024 had 366 days; 1,000,000 is a million and 3.14159 is pi.",
    "   leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "multiple     spaces    between     words",
    "Unicode: café, naïve, Zürich, São Paulo, Ærøskøbing",
    "日本語のテキストと中文文本 and 한국어",
    "Emoji: 🙂🚀🔥 👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "Math: ∑_{i=1}^{n} i = n(n+1)/2, √2 ≈ 1.41421, α β γ δ",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say it's John's and we've done what you'd've done.",
    "URL: https://example.com/path?query=1&x=y#frag and email a.b@c.de",
    "0123456789 00 007 3e10 -42 +7 1/3 0.75 12,345.678",
    "ALL CAPS SHOUTING and MiXeD cAsE words",
    "Punctuation!!! ??? ... --- ;;; ::: \"quoted\" 'single' (parens) [brackets] {braces}",
    "a" * 50 + " " + "ab" * 20,
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "Ελληνικά, русский текст, עברית, العربية",
    "Solve: 3x + 5 = 20. Step 1: subtract 5 from both sides.\nStep 2: divide by 3.\nThe answer is \\boxed{5}.",
    "",
    " ",
    "\n",
]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else None
    if path is None:
        from ponder.loading.registry import resolve
        path = resolve("smollm2-135m")
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    cases = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)} for t in CORPUS]
    with open("tests/data/tokenizer_corpus.json", "w") as f:
        json.dump({"about": "llama.cpp (llama-cpp-python) tokenization of SmolLM2-135M-Instruct.Q4_1.gguf, "
                            "add_bos=False, special=True; made by scripts/make_tokenizer_reference.py",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
