"""Progress lines for long runs, shown on a terminal and silent in CI logs.

``Progress`` rewrites one line on stderr (``[3/14] bundle: up2-0 stress``) while a
run works through its steps, and clears it at the end. It writes only when stderr
is a terminal and the ``CI`` environment variable is unset (GitHub Actions, GitLab
and most CI systems set it), so logs and captured output never see it.

Example:
    >>> import io
    >>> with Progress(2, "bench", stream=io.StringIO()) as progress:
    ...     progress.step("nn.GroupNorm")
    ...     progress.step("candidate")
    >>> progress.done
    2
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def progress_enabled(stream: TextIO | None = None, environ=None) -> bool:
    """True when ``stream`` (stderr by default) is a terminal and ``CI`` is unset."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if environ.get("CI", "").strip():
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Counts steps of a long run and shows the current one on a terminal.

    Args:
        total: how many steps the run has (shown as ``[i/total]``).
        label: what runs, e.g. ``"bundle"``.
        stream: where to write; stderr by default.
        enabled: force on or off; by default ``progress_enabled(stream)``.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.done = 0
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self, what: str) -> None:
        """Start the next step, named ``what``."""
        self.done += 1
        self._show(f"[{self.done}/{self.total}] {self.label}: {what}")

    def close(self) -> None:
        """Clear the progress line, leaving the terminal as it was."""
        if self._width:
            self._show("")

    def _show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = " " * max(self._width - len(text), 0)
        # on clearing, the trailing \r puts the cursor back at the start of the line
        self.stream.write(f"\r{text}{pad}" + ("" if text else "\r"))
        self.stream.flush()
        self._width = len(text)
