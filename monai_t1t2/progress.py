"""Progress over a collection of volumes (``predict``, ``qc``, the bundles' run): what the user sees while it works.

On a terminal a tqdm bar counts the volumes (and, for a translation, MONAI's sliding window draws a second
bar over the windows of the volume in hand). Anywhere else (a log file, a pipe, a test) the bar would be
carriage-return noise, so each volume done gets one plain line instead, and a volume that failed gets
none: its error line is its record.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class VolumeProgress:
    """Counts volumes done: a tqdm bar on a terminal, one line per volume done elsewhere.

    Args:
        total: volumes to do.
        task: what is done to each (``"translating"``, ``"qc"``), the bar's label and the lines' verb.
        enabled: False shows nothing (the Python API's ``progress=False``).

    Example:
        >>> with VolumeProgress(2, "qc", enabled=False) as progress:
        ...     progress.done("a.nii.gz", "measured")
    """

    def __init__(self, total: int, task: str, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.total, self.task, self.count = total, task, 0
        self.terminal = enabled and on_terminal()
        self.lines = enabled and not self.terminal
        self.bar = tqdm(total=total, desc=task, unit="volume", file=sys.stderr) if self.terminal else None

    def done(self, path: str | Path, status: str, seconds: float | None = None, failed: bool = False) -> None:
        """One more volume done; ``status`` says how (``"translated"``), ``failed`` ones print no line of their own."""
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(Path(path).name, refresh=False)
            self.bar.update()
        elif self.lines and not failed:
            timing = f" in {seconds:.1f} s" if seconds is not None else ""
            print(f"monai-t1t2: {self.task} {self.count}/{self.total}: {path}: {status}{timing}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "VolumeProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
