"""Each tool's few-shot exemplars: short worked answers that show the model how to call it.

Written for ponder, generic, and drawn from no evaluation set (no suite generates these questions).
The results shown after each call are exactly what the tool returns, so the exemplars teach the
format the model will then see spliced into its own answers.  A calc answer is "expression =
value", the style that SmolLM2-135M follows most reliably (issue 12's probe: 38 of 40 word
problems got an evaluable expression).
"""

from __future__ import annotations

NUMBER = "Answer with just the number."

EXEMPLARS: dict[str, list[tuple[str, str]]] = {
    "calc": [
        (f"A baker sells 14 boxes of 6 muffins and keeps 9 muffins. How many muffins did she bake? {NUMBER}",
         "14 * 6 + 9 = 93"),
        (f"What is 5/6 - 1/4? {NUMBER}", "5/6 - 1/4 = 7/12"),
        (f"A jacket costs $80 and is 15% off. What is the new price? {NUMBER}", "80 - 15% of 80 = 68"),
        (f"Which is larger: 0.62 or 5/8? {NUMBER}", "max(0.62, 5/8) = 0.625"),
        (f"Round 7.4851 to two decimal places. {NUMBER}", "round(7.4851, 2) = 7.49"),
        (f"What is 3.5e2 ÷ 0.25? {NUMBER}", "3.5e2 / 0.25 = 1400"),
    ],
    "python": [
        (f"What is the sum of the squares of the whole numbers from 1 to 12? {NUMBER}",
         "```python\nprint(sum(k * k for k in range(1, 13)))\n```\n```output\n650\n```\nThe answer is 650."),
        (f"How many days are there from March 3 to May 17 of the same year? {NUMBER}",
         "```python\nfrom datetime import date\nprint((date(2021, 5, 17) - date(2021, 3, 3)).days)\n```\n"
         "```output\n75\n```\nThe answer is 75."),
    ],
}


def exemplar_messages(tool_names: list[str]) -> list[dict]:
    """The exemplars of the given tools as chat turns (user question, assistant answer), in order."""
    out = []
    for name in tool_names:
        for q, a in EXEMPLARS.get(name, []):
            out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


CHECK = "Check it with one calculation."

# Self-verification: the proposed answer is checked by computing the question again; one exemplar
# confirms, one does not (the calculation's value differs), so a check is a recomputation, not a copy.
CHECK_EXEMPLARS: list[tuple[str, str]] = [
    ("A baker sells 14 boxes of 6 muffins and keeps 9 muffins. How many muffins did she bake?\n"
     f"Proposed answer: 93\n{CHECK}", "14 * 6 + 9 = 93"),
    (f"What is 5/6 - 1/4?\nProposed answer: 4/2\n{CHECK}", "5/6 - 1/4 = 7/12"),
    (f"A jacket costs $80 and is 15% off. What is the new price?\nProposed answer: 68\n{CHECK}", "80 - 15% of 80 = 68"),
]


def check_messages(question: str, answer: str, exemplars: int = len(CHECK_EXEMPLARS)) -> list[dict]:
    """The chat that asks the model to check a proposed answer by recomputing it."""
    out = []
    for q, a in CHECK_EXEMPLARS[:exemplars]:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out + [{"role": "user", "content": f"{question}\nProposed answer: {answer}\n{CHECK}"}]
