"""holocell's own warning categories, so that users (and the test suite) can filter them by class.

``HoloCellWarning`` subclasses :class:`UserWarning` and ``HoloCellDeprecationWarning`` subclasses
:class:`FutureWarning` (shown to users by default), so existing ``UserWarning`` / ``FutureWarning``
filters keep catching them. The test suite turns both into errors (``pyproject.toml``).
"""

from __future__ import annotations

__all__ = ["HoloCellDeprecationWarning", "HoloCellWarning"]


class HoloCellWarning(UserWarning):
    """A warning raised by holocell about the user's data, settings or files."""


class HoloCellDeprecationWarning(FutureWarning):
    """A holocell name or option that still works but will be removed; the message names the replacement."""
