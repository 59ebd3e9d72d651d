"""The base of every error whose message tells the user what to fix.

The CLI prints these as one line and exits 2, without a traceback. Defined apart from the
modules that raise them so that ``farm`` can catch them without importing torch or Ray.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem of the user's input (config, files, run folder); the message names it and the fix."""


class RunError(UserError, RuntimeError):
    """A user-facing problem with a run (message says what and how to fix it)."""
