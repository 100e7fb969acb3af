"""Turning a Problem into chat messages: the question plus a short instruction for the answer.

Small models follow a terse instruction best: "Answer with just the number." gets
SmolLM2-135M to reply "3 + 5 = 8", which the extractor reads.  The `steps` style asks for
one reasoning step per line, which is what step-level beam search splits on.  With `worked`
(a run with calc), a shot answers with its generator's worked solution, "expression = value",
the form calc computes, instead of the bare reference.
"""

from __future__ import annotations

from ponder.errors import InvalidParameterError
from ponder.tasks.problem import Problem

_DIRECT = {"number": "Answer with just the number.",
           "fraction": "Answer with just the fraction.",
           "list": "Answer with just the numbers, separated by commas.",
           "factors": "Answer with just the product, like 2 * 2 * 3.",
           "moves": "Write only the moves, one per line.",
           "text": "Answer with just the final answer."}
_FINAL = {"number": "N", "fraction": "the fraction", "list": "the numbers, separated by commas",
          "factors": "the product, like 2 * 2 * 3", "moves": "the moves, one per line", "text": "the answer"}
PROMPT_STYLES = {"direct": "the question and 'Answer with just the number.' (or list, fraction)",
                 "steps": "think step by step, one step per line, then 'The answer is N.'"}


def instruction(problem: Problem, style: str = "direct") -> str:
    form = problem.answer_form if problem.answer_form in _DIRECT else "text"
    if style == "direct":
        return _DIRECT[form]
    if style == "steps":
        return f"Think step by step, one short step per line. End with 'The answer is {_FINAL[form]}.'"
    raise InvalidParameterError(f"unknown prompt style {style!r}; valid: {', '.join(PROMPT_STYLES)}", "prompt_style")


def messages(problem: Problem, style: str = "direct", shots: list[Problem] = (),
             preamble: list[dict] = (), worked: bool = False) -> list[dict]:
    """The chat for one problem: `preamble` (e.g. a tool's exemplars), then each shot as a user turn
    and its answer as the assistant's (the worked solution if `worked`), then the problem."""
    out = list(preamble)
    for s in shots:
        out += [{"role": "user", "content": f"{s.question} {instruction(s, style)}"},
                {"role": "assistant", "content": shot_answer(s, style, worked)}]
    return out + [{"role": "user", "content": f"{problem.question} {instruction(problem, style)}"}]


def shot_answer(problem: Problem, style: str, worked: bool = False) -> str:
    if worked and problem.solution:
        return problem.solution if style == "direct" else f"{problem.solution}\nThe answer is {problem.answer}."
    if problem.answer_form == "moves" or style == "direct":
        return problem.answer
    return f"The answer is {problem.answer}."
