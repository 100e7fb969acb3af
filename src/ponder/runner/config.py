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
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def strategy_options(self) -> Options:
        known = {f.name for f in fields(Options)}
        bad = [k for k in self.options if k not in known]
        if bad:
            raise InvalidParameterError(f"unknown strategy option {bad[0]!r}", bad[0])
        opts = Options(**self.options)
        if self.scorer:
            opts.scorer = load_scorer(self.scorer)
        return opts


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
