"""Every error whose message tells the user what to fix, in one place.

The CLI catches :class:`FarmError` once and prints it as one line (exit 2), without a
traceback; anything else is a bug and keeps its traceback. The classes live here, apart from
the modules that raise them, so that ``farm`` can catch them without importing torch or Ray
and so that no module imports another only for its exception.
"""
from __future__ import annotations


class FarmError(Exception):
    """A problem of the user's input (config, files, run folder); the message names it and the fix."""


class ConfigError(FarmError, ValueError):
    """A config could not be turned into a valid schema object; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"invalid config{f' {source}' if source else ''}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems))


class DatasetError(ConfigError):
    """The configured data cannot be read (missing root, wrong layout); the message names the
    dataset, the path and the fix."""


class CheckpointError(FarmError):
    """A checkpoint could not be used; the message names the file and the fix."""


class StoreError(FarmError, RuntimeError):
    """A results folder could not be read or written; the message says which and why."""


class RunError(FarmError, RuntimeError):
    """A run cannot start or finish as asked (resume of another config, missing rows, Ray)."""
