"""The `puzzles` suite: the puzzles of "The Illusion of Thinking", checked by simulating the moves.

- hanoi: move N disks from one peg to another ("disk D from X to Y" per line);
- river: N clients and their N guards cross a river in a boat for K; no client may be with another
  client's guard unless their own guard is there too, on either bank or in the boat (one crossing
  per line: the people in the boat, "g1 c1"); crossings alternate, starting from the left bank;
- blocks: rearrange lettered blocks on 3 stacks into the goal stacks ("move B from 1 to 3");
- checkers: N red checkers (R) on the left, N blue (B) on the right, one empty square between; red
  moves right, blue moves left, each slides into the empty square or jumps one checker of the other
  colour into it; swap the sides ("from 2 to 3" per line, squares numbered from 1).

Difficulty is the size (disks, pairs, blocks, checkers per side), up to MAX_DIFFICULTY so that the
reference solutions (breadth-first search) stay instant.  Any legal solution is right, not only the
reference: the verifier simulates what the model wrote, and lines it cannot read are skipped as prose.
"""

from __future__ import annotations

import functools
import random
import re
from collections import deque
from itertools import combinations

from ponder.tasks.problem import Problem
from ponder.tasks.verify import Verdict, verifier

CATEGORIES = ("hanoi", "river", "blocks", "checkers")
MAX_DIFFICULTY = 5


# -- Tower of Hanoi --------------------------------------------------------------------------------
_HANOI_MOVE = re.compile(r"(?:disk|move)\s*(\d+)\s*(?:from\s*)?(?:peg\s*)?([abc])\s*(?:to|->|→)\s*(?:peg\s*)?([abc])\b",
                         re.IGNORECASE)


def hanoi_moves(n: int, a: str = "A", b: str = "B", c: str = "C") -> list[tuple[int, str, str]]:
    if n == 0:
        return []
    return hanoi_moves(n - 1, a, c, b) + [(n, a, c)] + hanoi_moves(n - 1, b, a, c)


@verifier("hanoi")
def verify_hanoi(inst: dict, text: str) -> Verdict:
    moves = [(int(d), x.upper(), y.upper()) for d, x, y in _HANOI_MOVE.findall(text)]
    if not moves:
        return Verdict(False, None, "no moves found")
    sol = ";".join(f"{d}{x}{y}" for d, x, y in moves)
    n, src, dst = inst["n"], inst.get("src", "A"), inst.get("dst", "C")
    pegs = {"A": [], "B": [], "C": []}
    pegs[src] = list(range(n, 0, -1))
    for i, (d, x, y) in enumerate(moves, 1):
        if x == y:
            return Verdict(False, sol, f"move {i}: from and to the same peg", illegal=True)
        if not pegs[x] or pegs[x][-1] != d:
            return Verdict(False, sol, f"move {i}: disk {d} is not on top of peg {x}", illegal=True)
        if pegs[y] and pegs[y][-1] < d:
            return Verdict(False, sol, f"move {i}: disk {d} onto the smaller disk {pegs[y][-1]}", illegal=True)
        pegs[y].append(pegs[x].pop())
    if pegs[dst] != list(range(n, 0, -1)):
        return Verdict(False, sol, f"not all disks are on peg {dst}")
    return Verdict(True, sol)


def _hanoi(rng, d):
    n = d + 2
    src, dst = rng.sample("ABC", 2)
    via = next(p for p in "ABC" if p not in (src, dst))
    q = (f"Tower of Hanoi: {n} disks, numbered 1 (smallest) to {n} (largest), are stacked on peg {src}. Move them all "
         f"to peg {dst}. Move one disk at a time, only the top disk of a peg, and never put a disk on a smaller one. "
         f"Write each move on its own line as 'disk D from X to Y'.")
    ref = "\n".join(f"disk {d_} from {x} to {y}" for d_, x, y in hanoi_moves(n, src, via, dst))
    return q, ref, {"n": n, "src": src, "dst": dst}


# -- River crossing ------------------------------------------------------------------------------
_PERSON = re.compile(r"\b([cg])(\d+)\b", re.IGNORECASE)


def _safe(group) -> bool:
    guards = {i for r, i in group if r == "g"}
    return all(i in guards or not (guards - {i}) for r, i in group if r == "c")


def _shortest_moves(start, goal, moves):
    """The shortest list of moves from start to goal (breadth-first), or None if there is none.
    `moves(state)` yields (move, next_state) pairs; the first path found to a state is kept, so the
    answer is the same on every run."""
    prev = {start: None}
    q = deque([start])
    while q:
        s = q.popleft()
        if s == goal:
            break
        for mv, nxt in moves(s):
            if nxt not in prev:
                prev[nxt] = (s, mv)
                q.append(nxt)
    if goal not in prev:
        return None
    path, s = [], goal
    while prev[s] is not None:
        s, mv = prev[s]
        path.append(mv)
    return tuple(reversed(path))


@functools.lru_cache(maxsize=None)
def river_solution(n: int, k: int) -> tuple[tuple[tuple[str, int], ...], ...] | None:
    everyone = frozenset((r, i) for i in range(1, n + 1) for r in "cg")

    def moves(state):
        left, side = state
        here = left if side == 0 else everyone - left
        for size in range(1, k + 1):
            for boat in combinations(sorted(here), size):
                b = frozenset(boat)
                new_left = left - b if side == 0 else left | b
                if _safe(b) and _safe(new_left) and _safe(everyone - new_left):
                    yield boat, (new_left, 1 - side)

    return _shortest_moves((everyone, 0), (frozenset(), 1), moves)


def _people(line: str) -> list[tuple[str, int]]:
    return [(r.lower(), int(i)) for r, i in _PERSON.findall(line)]


@verifier("river")
def verify_river(inst: dict, text: str) -> Verdict:
    n, k = inst["n"], inst["k"]
    trips = [p for p in (_people(ln) for ln in text.splitlines()) if p]
    if not trips:
        return Verdict(False, None, "no crossings found")
    sol = ";".join(" ".join(f"{r}{i}" for r, i in sorted(t)) for t in trips)
    everyone = {(r, i) for i in range(1, n + 1) for r in "cg"}
    left, side = set(everyone), 0
    for t, boat in enumerate(trips, 1):
        b = set(boat)
        here = left if side == 0 else everyone - left
        if len(b) != len(boat) or not b <= everyone:
            return Verdict(False, sol, f"crossing {t}: someone named twice or unknown", illegal=True)
        if not b <= here:
            return Verdict(False, sol, f"crossing {t}: not everyone in the boat is on that bank", illegal=True)
        if len(b) > k:
            return Verdict(False, sol, f"crossing {t}: more than {k} in the boat", illegal=True)
        left = left - b if side == 0 else left | b
        side = 1 - side
        if not (_safe(b) and _safe(left) and _safe(everyone - left)):
            return Verdict(False, sol, f"crossing {t}: a client is left with another client's guard", illegal=True)
    if left:
        return Verdict(False, sol, "not everyone is on the right bank")
    return Verdict(True, sol)


def _river(rng, d):
    n = d + 1
    k = 2 if n <= 3 else 3 if n <= 5 else 4
    q = (f"River crossing: {n} clients (c1 to c{n}) and their {n} guards (g1 to g{n}) are on the left bank. "
         f"A boat carries 1 to {k} people. No client may ever be with another client's guard unless their own "
         f"guard is also there, on a bank or in the boat. Get everyone to the right bank. Crossings alternate, "
         f"starting from the left bank. Write each crossing on its own line as the people in the boat, like 'g1 c1'.")
    ref = "\n".join(" ".join(f"{r}{i}" for r, i in boat) for boat in river_solution(n, k))
    return q, ref, {"n": n, "k": k}


# -- Blocks world --------------------------------------------------------------------------------
_BLOCK_MOVE = re.compile(r"move\s+(?:block\s+)?([A-Z])\s+from\s+(?:stack\s*)?(\d)\s+to\s+(?:stack\s*)?(\d)", re.IGNORECASE)


def _stacks_text(stacks) -> str:
    return "; ".join(f"stack {i}: {' '.join(s) if s else 'empty'}" for i, s in enumerate(stacks, 1))


def _freeze(stacks):
    return tuple(tuple(s) for s in stacks)


@functools.lru_cache(maxsize=4096)
def blocks_solution(initial, goal) -> tuple[tuple[str, int, int], ...]:
    def moves(s):
        for i, src in enumerate(s):
            if not src:
                continue
            for j in range(len(s)):
                if i != j:
                    t = [list(x) for x in s]
                    t[j].append(t[i].pop())
                    yield (src[-1], i + 1, j + 1), _freeze(t)

    return _shortest_moves(initial, goal, moves)


@verifier("blocks")
def verify_blocks(inst: dict, text: str) -> Verdict:
    moves = [(b.upper(), int(x), int(y)) for b, x, y in _BLOCK_MOVE.findall(text)]
    if not moves:
        return Verdict(False, None, "no moves found")
    sol = ";".join(f"{b}{x}{y}" for b, x, y in moves)
    stacks = [list(s) for s in inst["initial"]]
    for i, (b, x, y) in enumerate(moves, 1):
        if not (1 <= x <= len(stacks) and 1 <= y <= len(stacks)) or x == y:
            return Verdict(False, sol, f"move {i}: no such pair of stacks {x}, {y}", illegal=True)
        if not stacks[x - 1] or stacks[x - 1][-1] != b:
            return Verdict(False, sol, f"move {i}: {b} is not on top of stack {x}", illegal=True)
        stacks[y - 1].append(stacks[x - 1].pop())
    if stacks != [list(s) for s in inst["goal"]]:
        return Verdict(False, sol, "the stacks do not match the goal")
    return Verdict(True, sol)


def _random_stacks(rng, blocks):
    stacks = [[], [], []]
    for b in rng.sample(blocks, len(blocks)):
        stacks[rng.randrange(3)].append(b)
    return _freeze(stacks)


def _blocks(rng, d):
    blocks = [chr(ord("A") + i) for i in range(d + 2)]
    initial = _random_stacks(rng, blocks)
    goal = _random_stacks(rng, blocks)
    while goal == initial:
        goal = _random_stacks(rng, blocks)
    q = (f"Blocks world: three stacks, listed bottom to top. Now: {_stacks_text(initial)}. Goal: {_stacks_text(goal)}. "
         f"Move one block at a time, only the top block of a stack. Write each move on its own line as "
         f"'move B from 1 to 3'.")
    ref = "\n".join(f"move {b} from {x} to {y}" for b, x, y in blocks_solution(initial, goal))
    return q, ref, {"initial": [list(s) for s in initial], "goal": [list(s) for s in goal]}


# -- Checker jumping -----------------------------------------------------------------------------
_JUMP = re.compile(r"(?<![\d.])(\d+)\s*(?:->|→|to)\s*(\d+)(?![\d.])", re.IGNORECASE)


def _board(n: int) -> list[str]:
    return ["R"] * n + ["_"] + ["B"] * n


def _legal(board, a, b) -> str | None:
    """Why moving from square a to square b (0-based) is illegal, or None."""
    if not (0 <= a < len(board) and 0 <= b < len(board)):
        return "no such square"
    piece = board[a]
    if piece == "_":
        return "no checker there"
    if board[b] != "_":
        return "the target square is not empty"
    step = b - a
    if (piece == "R" and step not in (1, 2)) or (piece == "B" and step not in (-1, -2)):
        return "red moves right and blue moves left, by one square or a jump over one"
    if abs(step) == 2 and board[(a + b) // 2] in ("_", piece):
        return "a jump must go over a checker of the other colour"
    return None


@functools.lru_cache(maxsize=None)
def checkers_solution(n: int) -> tuple[tuple[int, int], ...]:
    def moves(s):
        for a in range(len(s)):
            for b in (a - 2, a - 1, a + 1, a + 2):
                if _legal(s, a, b) is None:
                    t = list(s)
                    t[a], t[b] = "_", t[a]
                    yield (a + 1, b + 1), tuple(t)

    return _shortest_moves(tuple(_board(n)), tuple(["B"] * n + ["_"] + ["R"] * n), moves)


@verifier("checkers")
def verify_checkers(inst: dict, text: str) -> Verdict:
    moves = [(int(a), int(b)) for a, b in _JUMP.findall(text)]
    if not moves:
        return Verdict(False, None, "no moves found")
    sol = ";".join(f"{a}-{b}" for a, b in moves)
    n = inst["n"]
    board = _board(n)
    for i, (a, b) in enumerate(moves, 1):
        why = _legal(board, a - 1, b - 1)
        if why:
            return Verdict(False, sol, f"move {i} ({a} to {b}): {why}", illegal=True)
        board[a - 1], board[b - 1] = "_", board[a - 1]
    if board != ["B"] * n + ["_"] + ["R"] * n:
        return Verdict(False, sol, "the sides are not swapped")
    return Verdict(True, sol)


def _checkers(rng, d):
    n = d
    q = (f"Checker jumping: a row of {2 * n + 1} squares numbered 1 to {2 * n + 1} holds {' '.join(_board(n))} "
         f"({n} red R, one empty _, {n} blue B). Red moves only right, blue only left; a checker slides into the "
         f"adjacent empty square or jumps over one checker of the other colour into the empty square. Swap the "
         f"colours. Write each move on its own line as 'from 2 to 3'.")
    ref = "\n".join(f"from {a} to {b}" for a, b in checkers_solution(n))
    return q, ref, {"n": n}


_MAKERS = {"hanoi": _hanoi, "river": _river, "blocks": _blocks, "checkers": _checkers}


def make_problem(seed, difficulty: int, index: int, number_format: str = "plain",
                 categories: tuple[str, ...] = CATEGORIES) -> Problem:
    rng = random.Random(f"puzzles:{seed}:{difficulty}:{index}")
    cat = categories[index % len(categories)]
    question, reference, instance = _MAKERS[cat](rng, difficulty)
    return Problem(id=f"puzzles/d{difficulty}/s{seed}/{index}", question=question, answer=reference, kind="verify",
                   category=cat, difficulty=difficulty, answer_form="moves",
                   meta={"verifier": cat, "instance": instance})
