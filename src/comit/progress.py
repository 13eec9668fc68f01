"""Progress of every long loop (train, eval, tokenize, bench, experiments): one helper.

On a terminal it is a tqdm bar. Off a terminal (a log file, a cluster job's stdout) a bar would
write carriage returns that a log shows as one endless line, and tqdm's own default is to show
nothing at all; there it writes a plain line every ``COMIT_PROGRESS_SECONDS`` (default 30) seconds
instead, so a log says how far a run got and how long it has left.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

from .user_settings import env_number

PROGRESS_SECONDS_ENV = "COMIT_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:3.0f}%) {elapsed} elapsed, {remaining} left, {rate_fmt}{postfix}"


class _Discard:
    """Where tqdm's own writes go (the carriage returns and blank line it ends with)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LineProgress(tqdm):
    """A tqdm that prints whole lines to ``file``: one per ``mininterval`` seconds, then the last."""

    _printed_n: int | None = None
    _printed_at: float = 0.0
    _lines: int = 0

    def __init__(self, *args, file=None, **kwargs):
        self.log = file if file is not None else sys.stderr
        super().__init__(*args, file=_Discard(), **kwargs)
        self._printed_n, self._printed_at = self.n, self._time()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self._printed_n is None:
            return True  # tqdm's first refresh, from inside __init__
        now = self._time()
        # The closing line only ends a run of lines: a loop shorter than the interval stays silent,
        # so a quick command's output (and its one-line errors) is not padded with progress.
        finished = self.total is not None and self.n >= self.total and self._lines > 0
        due = now - self._printed_at >= self.mininterval
        if self.n == self._printed_n or not (due or finished):
            return True  # a postfix refresh, or too soon: the log gets no new line
        text = (msg or self.__str__()).strip()
        if text:
            self.log.write(text + "\n")
            self.log.flush()
        self._printed_n, self._printed_at = self.n, now
        self._lines += 1
        return True


def progress_seconds() -> float:
    return env_number(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS, float, "a number of seconds")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             initial: int = 0, leave: bool = True, enabled: bool = True, file=None) -> tqdm:
    """A progress bar on a terminal, periodic log lines elsewhere, nothing when not ``enabled``."""
    file = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if getattr(file, "isatty", lambda: False)():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=file,
                    dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                        mininterval=progress_seconds(), maxinterval=progress_seconds(), bar_format=LINE_FORMAT,
                        ascii=True)
