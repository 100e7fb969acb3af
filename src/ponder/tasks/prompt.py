"""Turning a Problem into chat messages: the question plus a short instruction for the answer.

Small models follow a terse instruction best: "Answer with just the number." gets
SmolLM2-135M to reply "3 + 5 = 8", which the extractor reads.  The `steps` style asks for
one reasoning step per line, which is what step-level beam search splits on.
"""

from __future__ import annotations

from ponder.errors import InvalidParameterError
from ponder.tasks.problem import Problem

_DIRECT = {"number": "Answer with just the number.",
           "fraction": "Answer with just the fraction.",
           "list": "Answer with just the numbers, separated by commas.",
           "text": "Answer with just the final answer."}
_FINAL = {"number": "N", "fraction": "the fraction", "list": "the numbers, separated by commas", "text": "the answer"}
PROMPT_STYLES = {"direct": "the question and 'Answer with just the number.' (or list, fraction)",
                 "steps": "think step by step, one step per line, then 'The answer is N.'"}


def instruction(problem: Problem, style: str = "direct") -> str:
    form = problem.answer_form if problem.answer_form in _DIRECT else "text"
    if style == "direct":
        return _DIRECT[form]
    if style == "steps":
        return f"Think step by step, one short step per line. End with 'The answer is {_FINAL[form]}.'"
    raise InvalidParameterError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}", "prompt_style")


def messages(problem: Problem, style: str = "direct") -> list[dict]:
    return [{"role": "user", "content": f"{problem.question} {instruction(problem, style)}"}]
