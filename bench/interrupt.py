"""Ctrl-C and SIGTERM for the whole life of ``benchbox sweep``, not only while the event loop runs.

The event loop handles the signals while levels run (``bench.sweep_cli._main``: cancel in-flight
requests, record them as ``cancelled``). Before it starts and after it ends — reading the scenario,
creating the run directory, writing result.json, the quality pass, the report, the exporter's grace
period — this guard does. Its policy:

- first signal: in ``raise`` mode an ``Interrupted`` exception is raised where the main thread is
  (the caller marks the run incomplete and exits 130); in ``flag`` mode (short critical sections
  that must not be torn, e.g. creating the run directory) it is only remembered in ``signame``;
- second signal, in any mode: ``on_second`` runs (stop managed servers, close the records file)
  and the process exits 130 at once;
- in ``exit`` mode (``exit_on_signal``: a command's first moments, when nothing is written yet) the
  first signal prints one line and exits 130.

From the first line of ``bench/cli.py`` run as a program (``benchbox``, ``python -m bench.cli``) until a
command installs its guard, ``early_exit`` prints one line and exits 130. Only a signal in the
interpreter's own start-up (a few tens of ms, before any benchbox code runs) gets Python's default
handling: a KeyboardInterrupt traceback, with nothing written.

SIGTERM is treated exactly like SIGINT: a supervisor's stop request keeps every record too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import Any, Callable, Iterator, Optional

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The user (or a supervisor) asked the sweep to stop. BaseException: no ``except Exception`` eats it."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class SignalGuard:
    def __init__(self, on_second: Optional[Callable[[], None]] = None):
        self.on_second = on_second
        self.signame: Optional[str] = None
        self.mode = "raise"
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """(Re)install the handlers: call again after an event loop has removed its own."""
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            if previous is early_exit:  # past the start: Python's own handling again, not "nothing written"
                previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> "SignalGuard":
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def second(self, signame: str) -> None:
        """What a second signal does (also called by the event loop's handler)."""
        try:
            if self.on_second is not None:
                self.on_second()
        finally:
            os._exit(EXIT_INTERRUPTED)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.signame is not None:
            self.second(name)
        self.signame = name
        if self.mode == "exit":
            sys.stderr.write(f"benchbox: {name}: interrupted before the run began; nothing was written\n")
            raise SystemExit(EXIT_INTERRUPTED)
        if self.mode == "raise":
            raise Interrupted(name)

    @contextlib.contextmanager
    def flagging(self) -> Iterator[None]:
        """Within the block a first signal is only remembered (check ``signame`` after it)."""
        mode, self.mode = self.mode, "flag"
        try:
            yield
        finally:
            self.mode = mode

    def check(self) -> None:
        """Raise Interrupted if a signal arrived while flagging."""
        if self.signame is not None:
            raise Interrupted(self.signame)


def early_exit(signum: int, frame: Optional[FrameType]) -> None:
    """The handler from the program's first line (``bench/cli.py``) until a command installs its own:
    imports are all that ran, so nothing was written."""
    name = signal.Signals(signum).name
    os.write(2, f"benchbox: {name}: interrupted before the run began; nothing was written\n".encode())
    os._exit(EXIT_INTERRUPTED)


def install_early_exit() -> None:
    for sig in SIGNALS:
        signal.signal(sig, early_exit)


def exit_on_signal(ctx: Any) -> None:
    """For a click command's first moments: a signal exits 130 with one line (the command's own
    handling replaces this later); the previous handlers come back when the click context closes."""
    guard = SignalGuard()
    guard.mode = "exit"
    guard.install()
    ctx.call_on_close(guard.restore)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block SIGINT/SIGTERM in this thread (pending ones are delivered when the block ends).

    Threads started inside inherit the block, so the process-directed signal always lands in the
    main thread, whose handler is the one that knows what to do."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
