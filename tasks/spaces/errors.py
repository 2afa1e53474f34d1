"""Errors a user can act on. The CLI prints them as one line and exits non-zero, no traceback.

They live on the lowest floor so that spaces, methods, tasks and the harness all raise them.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataNotFoundError", "UnknownNameError", "UserError"]


class UserError(Exception):
    """Base class: the message says what was wrong, what was expected and what to do."""


class UnknownNameError(UserError, LookupError):
    """An unknown registry name; the message lists the valid names and the closest match."""


class ConfigError(UserError, ValueError):
    """A config key that is unknown, mistyped or out of range; the message names the key."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A data set that is not where the config says; the message says where it looked and how to fix it."""
