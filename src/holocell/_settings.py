"""``holocell.settings``: process-wide switches, changed only when the user sets them.

Importing holocell changes nothing outside the package: no environment variable, no logger of
another library. Every switch below acts when it is set (or, for Lightning's log level, only while
holocell trains).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import numbers
import os
import sys
from collections.abc import Iterator
from typing import Literal

__all__ = ["HolocellSettings", "settings"]

LOGGER_NAME = "holocell"
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def _level(value: int | str) -> int:
    """A logging level from an int (0 to 50) or a name (``"info"``, ``"WARNING"``, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"A logging level is an int or a name such as 'info', got {value!r}.")
    if isinstance(value, str):
        level = logging.getLevelName(value.upper())
        if not isinstance(level, int):
            raise ValueError(f"Unknown logging level {value!r}; use debug, info, warning, error or critical.")
        return level
    if not logging.NOTSET <= value <= logging.CRITICAL:
        raise ValueError(f"A logging level is between 0 and 50 (logging.CRITICAL), got {value!r}; e.g. 'info' (20).")
    return value


class _FallbackHandler(logging.StreamHandler):
    """Prints holocell's messages to stderr only while no logger above holocell's has a handler of its own, so a
    ``logging.basicConfig`` made after ``hc.settings.verbosity`` does not print every message twice."""

    def emit(self, record: logging.LogRecord) -> None:
        parent = logging.getLogger(LOGGER_NAME).parent
        while parent is not None:
            if parent.handlers:
                return
            parent = parent.parent if parent.propagate else None
        super().emit(record)


def _is_bool(value) -> bool:
    """``True`` / ``False``, also NumPy's (``np.True_``; its type is ``numpy.bool`` under NumPy 2, ``bool_`` before)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _interactive() -> bool:
    """True in a Jupyter / IPython kernel or when stderr is a terminal."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
        if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
            return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class HolocellSettings:
    """Process-wide settings of holocell (``hc.settings``).

    Attributes
    ----------
    verbosity
        Level of the ``"holocell"`` logger (an int or a name such as ``"info"``). Setting it also
        attaches a stderr handler to that logger when nothing in the logging tree would print its
        messages. Default: the logger's effective level (``WARNING`` unless you configured logging).
    progress_bar
        Default of every ``progress_bar=None`` / ``enable_progress_bar=None`` argument:
        ``"auto"`` (default) shows bars in Jupyter and on a terminal and hides them otherwise (log
        files, CI), as scvi-tools does; ``True`` always; ``False`` never.
    lightning_log_level
        Level of Lightning's loggers *while holocell trains* (restored afterwards), so Lightning's
        start-up banners and tips stay quiet. Default ``WARNING``; ``INFO`` shows them.
    huge_pages
        Back PyTorch's large CPU tensors with transparent huge pages (sets
        ``THP_MEM_ALLOC_ENABLE=1`` for this process; ``False`` removes it). On a CPU it cut ~40% of
        embedding time (docs/design.md, "CPU inference cost"). PyTorch reads the variable at its
        first large allocation, so set this before doing any work; setting it later has no effect.
        Default ``False``; the ``holocell`` command line turns it on.
    long_run_hours
        ``train()`` times its first steps and warns (a ``HoloCellWarning`` naming the cost and what cuts it) when
        the run would take longer than this many hours. Default ``1.0``; ``None`` never warns.

    Examples
    --------
    >>> import holocell as hc
    >>> hc.settings.verbosity = "info"  # show transfer reports
    >>> hc.settings.progress_bar = False
    >>> hc.settings.huge_pages = True  # before the first model is built
    """

    def __init__(self) -> None:
        self._progress_bar: bool | Literal["auto"] = "auto"
        self._lightning_log_level = logging.WARNING
        self._long_run_hours: float | None = 1.0

    # ------------------------------------------------------------------ logging
    @property
    def verbosity(self) -> int:
        """Level of the ``"holocell"`` logger."""
        return logging.getLogger(LOGGER_NAME).getEffectiveLevel()

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        logger.setLevel(_level(value))
        if not logger.hasHandlers():  # nothing would print below WARNING: give it a handler
            handler = _FallbackHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            logger.addHandler(handler)

    @property
    def lightning_log_level(self) -> int:
        """Level of Lightning's loggers while holocell trains."""
        return self._lightning_log_level

    @lightning_log_level.setter
    def lightning_log_level(self, value: int | str) -> None:
        self._lightning_log_level = _level(value)

    @contextlib.contextmanager
    def lightning_logging(self) -> Iterator[None]:
        """Context in which Lightning's loggers use :attr:`lightning_log_level` (restored on exit)."""
        loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
        before = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(self._lightning_log_level)
        try:
            yield
        finally:
            for lg, level in zip(loggers, before, strict=True):
                lg.setLevel(level)

    # ------------------------------------------------------------------ progress bars
    @property
    def progress_bar(self) -> bool | Literal["auto"]:
        """``"auto"``, ``True`` or ``False``."""
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool | Literal["auto"]) -> None:
        if not (_is_bool(value) or value == "auto"):
            raise ValueError(f"progress_bar must be 'auto', True or False, got {value!r}.")
        self._progress_bar = value if value == "auto" else bool(value)

    def show_progress(self, progress_bar: bool | None = None) -> bool:
        """Whether to show a progress bar: ``progress_bar`` itself, or this setting when it is ``None``.

        Raises
        ------
        ValueError
            ``progress_bar`` is not ``True``, ``False``, ``None`` or ``"auto"`` (``"no"`` would show a bar).
        """
        if not (progress_bar is None or _is_bool(progress_bar) or progress_bar == "auto"):
            raise ValueError(f"progress_bar must be True, False, 'auto' or None (the setting), got {progress_bar!r}.")
        choice = self._progress_bar if progress_bar is None else progress_bar
        return _interactive() if choice == "auto" else bool(choice)

    # ------------------------------------------------------------------ huge pages
    @property
    def huge_pages(self) -> bool:
        """Whether ``THP_MEM_ALLOC_ENABLE=1`` is set for this process."""
        return os.environ.get(HUGE_PAGES_ENV) == "1"

    @huge_pages.setter
    def huge_pages(self, value: bool) -> None:
        if not _is_bool(value):  # a string "no" would turn them on
            raise TypeError(f"huge_pages must be True or False, got {value!r}.")
        if value:
            os.environ[HUGE_PAGES_ENV] = "1"
        else:
            os.environ.pop(HUGE_PAGES_ENV, None)

    # ------------------------------------------------------------------ long runs
    @property
    def long_run_hours(self) -> float | None:
        """Projected training hours above which ``train()`` warns; ``None``: never."""
        return self._long_run_hours

    @long_run_hours.setter
    def long_run_hours(self, value: float | None) -> None:
        if value is not None and (_is_bool(value) or not isinstance(value, numbers.Real) or not value >= 0):
            raise ValueError(f"long_run_hours must be a number of hours >= 0, or None (never warn), got {value!r}.")
        self._long_run_hours = None if value is None else float(value)

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_") and not isinstance(getattr(type(self), name, None), property):
            known = [n for n, v in vars(type(self)).items() if isinstance(v, property)]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise AttributeError(f"hc.settings has no setting {name!r}{hint} Settings: {known}.")
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return (
            f"holocell settings: verbosity={logging.getLevelName(self.verbosity)}, "
            f"progress_bar={self.progress_bar!r}, "
            f"lightning_log_level={logging.getLevelName(self.lightning_log_level)}, huge_pages={self.huge_pages}, "
            f"long_run_hours={self.long_run_hours!r}"
        )


settings = HolocellSettings()
"""The settings object of this process (``hc.settings``)."""
