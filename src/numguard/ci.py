"""What numguard hands a CI system besides its exit code: the job's step summary.

GitHub Actions renders the markdown a step appends to the file named by
``$GITHUB_STEP_SUMMARY`` on the run's page. ``append_step_summary`` appends a
report there when the variable is set, and does nothing otherwise, so the same
command runs unchanged on a laptop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

STEP_SUMMARY_VAR = "GITHUB_STEP_SUMMARY"


def append_step_summary(markdown: str, environ=None) -> Path | None:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY``; return its path, or None.

    A summary that cannot be written is logged as a warning and never changes the
    outcome of the run: the report folder holds the same text.
    """
    environ = os.environ if environ is None else environ
    target = environ.get(STEP_SUMMARY_VAR, "").strip()
    if not target:
        return None
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(markdown.rstrip("\n") + "\n\n")
    except OSError as exc:
        log.warning("could not append to %s=%s: %s", STEP_SUMMARY_VAR, path, exc)
        return None
    return path
