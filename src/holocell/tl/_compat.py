"""Old call forms of the ``tl`` functions, kept working with a
:class:`~holocell.HoloCellDeprecationWarning` (a :class:`FutureWarning`)."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

from .._warnings import HoloCellDeprecationWarning


def legacy_positional(*names: str) -> Callable:
    """Accept the old positional arguments ``names`` after the new positional ones, with a
    :class:`~holocell.HoloCellDeprecationWarning` (a FutureWarning).

    The wrapped function keeps its signature (``inspect.signature`` follows ``__wrapped__``).
    """

    def decorator(func: Callable) -> Callable:
        params = inspect.signature(func).parameters.values()
        n_positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if len(args) <= n_positional:
                return func(*args, **kwargs)
            extra = args[n_positional:]
            if len(extra) > len(names):
                raise TypeError(f"{func.__name__}() takes {n_positional + len(names)} positional arguments at most.")
            moved = names[: len(extra)]
            for name, value in zip(moved, extra, strict=True):
                if name in kwargs:
                    raise TypeError(f"{func.__name__}() got multiple values for argument {name!r}.")
                kwargs[name] = value
            warnings.warn(
                f"Passing {', '.join(moved)} to holocell.tl.{func.__name__} by position is deprecated; "
                f"pass {'them' if len(moved) > 1 else 'it'} by keyword ({', '.join(f'{n}=...' for n in moved)}).",
                HoloCellDeprecationWarning,
                stacklevel=2,
            )
            return func(*args[:n_positional], **kwargs)

        return wrapper

    return decorator
