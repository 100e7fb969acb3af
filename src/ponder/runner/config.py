"""RunConfig: everything that defines a run, stored as JSON so the run can be resumed."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, fields

from ponder.errors import InvalidParameterError
from ponder.strategies import Options


@dataclass
class RunConfig:
    suite: str = "arithmetic"
    difficulty: int = 1
    problems: int = 50
    strategy: str = "greedy"
    seed: int = 0
    model: str = "smollm2-135m"
    number_format: str = "plain"
    prompt_style: str = "direct"
    shots: int = 0  # worked examples from the suite's own generator, before each problem
    shot_match: str = "any"  # any: the same shots for every problem; category: shots of the problem's category
    tools: list[str] = field(default_factory=list)  # e.g. ["calc", "python"]
    tool_exemplars: bool | None = None  # the tools' own few-shot exemplars; None: on when tools are
    categories: list[str] = field(default_factory=list)
    on_error: str = "stop"
    checker: str | None = None  # override the problems' own answer kinds
    scorer: str | None = None  # "module:function" for beam
    options: dict = field(default_factory=dict)  # Options fields

    @property
    def exemplars_on(self) -> bool:
        return bool(self.tools) if self.tool_exemplars is None else bool(self.tool_exemplars and self.tools)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_stored(cls, d: dict) -> RunConfig:
        """A config read back from the store, checked field by field (a resumed run must be the same run,
        never defaults standing in for what is missing).  Raises ValueError saying what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("is not a JSON object")
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ValueError(f"has no {missing[0]!r}")
        by_name = {f.name: f for f in fields(cls)}
        for k, v in d.items():
            if k not in by_name:
                raise ValueError(f"has an unknown field {k!r} (written by another ponder version?)")
            kinds = _kinds(by_name[k])
            if not any(v is None if t is None else type(v) is t for t in kinds):  # type(): True is not an int
                raise ValueError(f"has {k} = {v!r} (expected {' or '.join(_name(t) for t in kinds)})")
        for k in ("categories", "tools"):
            if not all(isinstance(c, str) for c in d.get(k, [])):
                raise ValueError(f"has {k} that are not strings")
        return cls(**d)

    def strategy_options(self) -> Options:
        known = {f.name for f in fields(Options)}
        bad = [k for k in self.options if k not in known]
        if bad:
            raise InvalidParameterError(f"unknown strategy option {bad[0]!r}", bad[0])
        opts = Options(**self.options)
        if self.scorer:
            opts.scorer = load_scorer(self.scorer)
        return opts


# what every stored config has had since the first release; the rest may take its default
REQUIRED = ("suite", "difficulty", "problems", "strategy", "seed", "model", "options")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "None": None}


def _kinds(f) -> list:
    """The types a RunConfig field takes (None for None), from its annotation: "bool | None" -> [bool, None]."""
    return [_TYPES[part.strip().split("[")[0]] for part in str(f.type).split("|")]


def _name(t) -> str:
    return "null" if t is None else t.__name__


def load_scorer(spec: str):
    """A user scorer given as "module:function" (or "path/to/file.py:function")."""
    mod_name, _, fn = spec.partition(":")
    if not fn:
        raise InvalidParameterError(f"--scorer must be MODULE:FUNCTION (got {spec!r})", "scorer")
    try:
        if mod_name.endswith(".py"):
            import importlib.util

            spec_ = importlib.util.spec_from_file_location("ponder_user_scorer", mod_name)
            if spec_ is None:
                raise ImportError(mod_name)
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except (ImportError, FileNotFoundError) as e:
        raise InvalidParameterError(f"cannot import scorer module {mod_name!r}: {e}", "scorer") from None
    f = getattr(module, fn, None)
    if not callable(f):
        raise InvalidParameterError(f"{mod_name} has no function {fn!r}", "scorer")
    return f
