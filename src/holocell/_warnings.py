"""holocell's own warning categories, so that users (and the test suite) can filter them by class.

``HoloCellWarning`` subclasses :class:`UserWarning` and ``HoloCellDeprecationWarning`` subclasses
:class:`FutureWarning` (shown to users by default), so existing ``UserWarning`` / ``FutureWarning``
filters keep catching them. The test suite turns both into errors (``pyproject.toml``).
"""

from __future__ import annotations

import sys

__all__ = ["HoloCellDeprecationWarning", "HoloCellWarning", "user_stacklevel"]


class HoloCellWarning(UserWarning):
    """A warning raised by holocell about the user's data, settings or files."""


class HoloCellDeprecationWarning(FutureWarning):
    """A holocell name or option that still works but will be removed; the message names the replacement."""


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that points at the first frame outside
    holocell (and torch's decorators): the user's line, however deep the call."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in ("holocell", "torch"):
        level, frame = level + 1, frame.f_back
    return level
