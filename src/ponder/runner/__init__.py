"""Running an experiment: a suite of problems through a strategy, recorded in the store."""

from ponder.runner.config import RunConfig
from ponder.runner.execute import Interrupted, execute, prepare, resume_command, resume_config

__all__ = ["Interrupted", "RunConfig", "execute", "prepare", "resume_command", "resume_config"]
