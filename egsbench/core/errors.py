"""Errors a user can act on. The CLI prints them as one line and exits non-zero, no traceback.

They live on the lowest floor so that spaces, methods, tasks and the harness all raise them.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DataNotFoundError",
    "UnknownNameError",
    "UserError",
    "check_range",
    "check_weight_optimiser",
]


class UserError(Exception):
    """Base class: the message says what was wrong, what was expected and what to do."""


class UnknownNameError(UserError, LookupError):
    """An unknown registry name; the message lists the valid names and the closest match."""


class ConfigError(UserError, ValueError):
    """A config key that is unknown, mistyped or out of range; the message names the key."""


class DataError(UserError, ValueError):
    """Data that is there but unusable (corrupt, truncated, empty, mismatched); the message names the file."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A data set that is not where the config says; the message says where it looked and how to fix it."""


def check_range(
    key: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ConfigError`` naming ``key`` (e.g. ``search.lr``) unless ``value`` lies in the range; None passes.

    Examples:
        >>> check_range("search.batch_size", 0, low=1)
        Traceback (most recent call last):
        ...
        egsbench.core.errors.ConfigError: config key search.batch_size must be >= 1, got 0
        >>> check_range("evaluate.drop_path", 0.2, 0.0, 1.0, high_open=True)
    """
    if value is None:
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"config key {key} must be a finite number, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            span = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {low}"
        else:
            span = f"{'<' if high_open else '<='} {high}"
        raise ConfigError(f"config key {key} must be {span}, got {value}")


def check_weight_optimiser(config, block: str = "search") -> None:
    """Range checks of the weight-optimiser fields every ``search:`` block carries (methods read them)."""
    check_range(f"{block}.epochs", config.epochs, low=0)  # 0 only for methods without supernet training
    for key in ("batch_size", "max_steps_per_epoch", "score_batches"):
        check_range(f"{block}.{key}", getattr(config, key), low=1)
    check_range(f"{block}.lr", config.lr, low=0, low_open=True)
    check_range(f"{block}.lr_min", config.lr_min, low=0, high=config.lr)
    check_range(f"{block}.momentum", config.momentum, 0, 1, high_open=True)
    check_range(f"{block}.weight_decay", config.weight_decay, low=0)
    check_range(f"{block}.grad_clip", config.grad_clip, low=0, low_open=True)
