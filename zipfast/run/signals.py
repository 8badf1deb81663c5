"""Clean interrupts: SIGINT, SIGTERM and SIGHUP stop a run between steps, never inside one.

While `StopSignals` is active, the first of these signals only sets a flag: the training loop
finishes its current step, writes a checkpoint and raises `RunInterrupted`, which the CLI
turns into one line (where the checkpoint is, the exact resume command) and the
conventional exit code 128 + signal number (130 / 143 / 129). A second SIGINT aborts at
once with KeyboardInterrupt (the last checkpoint on disk stays valid: writes are atomic).
Handlers are only installed from the main thread; elsewhere the guard does nothing.

Outside the step loop (loading the model, checking images, the final evaluation) there is no
step to finish: under `TerminateOnSignals` (the CLI) SIGTERM and SIGHUP raise `Terminated`
at once, as SIGINT raises KeyboardInterrupt, so the CLI can still say where the last
checkpoint is instead of dying silently.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

log = logging.getLogger("zipfast.run.signals")

STOP_SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
if hasattr(signal, "SIGHUP"):
    STOP_SIGNALS[signal.SIGHUP] = "SIGHUP"


def exit_code(signum: int) -> int:
    """The shell's code for a process stopped by signal `signum` (128 + signum)."""
    return 128 + int(signum)


class RunInterrupted(KeyboardInterrupt):
    """Training stopped cleanly after a stop signal. checkpoint: the saved file, or None."""

    def __init__(self, signum: int, step: int, queries: int, checkpoint=None):
        self.signum, self.step, self.queries, self.checkpoint = signum, step, queries, checkpoint
        self.signal_name = STOP_SIGNALS.get(signum, f"signal {signum}")
        where = (f"checkpoint saved to {checkpoint}" if checkpoint is not None
                 else "nothing saved (no output directory)")
        super().__init__(f"stopped by {self.signal_name} after step {step} ({queries} queries); {where}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class ManyInterrupted(RunInterrupted):
    """A signal (`cause`: the KeyboardInterrupt it raised) stopped a command of many runs (a sweep,
    bench-paper's jobs): no single checkpoint; `what(signal name)` is its message. A bare
    KeyboardInterrupt counts as SIGINT."""

    def __init__(self, cause: KeyboardInterrupt, what):
        self.signum = getattr(cause, "signum", signal.SIGINT)
        self.signal_name = getattr(cause, "signal_name", "SIGINT")
        self.step = self.queries = self.checkpoint = None
        KeyboardInterrupt.__init__(self, what(self.signal_name))


class Stopped(KeyboardInterrupt):
    """A stop by signal `signum`: its name and the shell's exit code; the message follows "stopped by
    <name>" with `what` (", …" or "; …")."""

    def __init__(self, signum: int, what: str = ""):
        self.signum = signum
        self.signal_name = STOP_SIGNALS.get(signum, f"signal {signum}")
        super().__init__(f"stopped by {self.signal_name}{what}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


class Terminated(Stopped):
    """SIGTERM or SIGHUP outside the step loop (nothing in flight to finish)."""


class TerminateOnSignals:
    """Context manager: SIGTERM and SIGHUP raise `Terminated` (SIGINT keeps KeyboardInterrupt)."""

    SIGNALS = tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)

    def __init__(self):
        self._previous: dict[int, object] = {}

    @staticmethod
    def _raise(signum, frame):
        raise Terminated(signum)

    def __enter__(self) -> "TerminateOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._raise)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


class StopSignals:
    """Context manager: defer SIGINT/SIGTERM/SIGHUP to the next step boundary.

    `requested` is the first signal's number (None until one arrives). A second SIGINT
    raises KeyboardInterrupt at once.
    """

    def __init__(self, what: str = "the current step"):
        self.what = what
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            self.restore()
            raise KeyboardInterrupt("second SIGINT: aborted at once")
        if self.requested is None:
            self.requested = signum
            print(f"zipfast: {STOP_SIGNALS.get(signum, signum)} received: finishing {self.what}, then saving "
                  "a checkpoint (press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        else:
            log.info("not in the main thread: SIGINT/SIGTERM/SIGHUP keep their default handling")
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
