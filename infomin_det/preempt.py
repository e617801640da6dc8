"""Preemption: SIGUSR2 (SLURM preemption or time limit, ``scancel --signal=USR2``, ``kill -USR2``)
caught as a flag, acted upon by every rank at the same step.

A training loop installs :class:`PreemptionSignal`, asks :meth:`~PreemptionSignal.requested` at the
end of each step (true on every rank once any rank got the signal), saves its state, then calls
:meth:`~PreemptionSignal.hand_over`: rank 0 runs the handler that was installed before (submitit's,
which calls the task's ``checkpoint()`` and requeues the job), every rank waits until that is done,
and all end with :class:`Preempted` -- a ``SystemExit`` that does not mark the run failed. Used by the
fine-tuning trainer (``engine/hooks.py``) and by pretraining (``pretrain/train.py``). No detectron2.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, NoReturn

from infomin_det import dist


class Preempted(SystemExit):
    """Raised on every rank once its state is saved for a preemption: ends the process without
    marking the run failed (rank 0's requeue, or a rerun of the same command, resumes it)."""


class PreemptionSignal:
    SIGNAL = signal.SIGUSR2

    def __init__(self) -> None:
        self.signalled = False
        self._previous: Any = None
        self._installed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def install(self) -> None:
        """Catch SIGUSR2 from now on (main thread only; elsewhere signals cannot be caught)."""
        if not self._installed and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.SIGNAL, self._on_signal)
            self._installed = True

    def restore(self) -> None:
        if self._installed:
            signal.signal(self.SIGNAL, self._previous)
            self._installed = False

    def requested(self) -> bool:
        """True on every rank iff some rank was signalled (a collective: call it on all ranks)."""
        return dist.any_rank(self.signalled)

    def hand_over(self, message: str) -> NoReturn:
        """After the state is saved: requeue through the previous handler (rank 0), then end."""
        previous = self._previous
        self.restore()
        handover: BaseException | None = None
        if dist.rank() == 0 and callable(previous):
            try:
                previous(self.SIGNAL, None)        # submitit: checkpoint() -> scontrol requeue -> sys.exit
            except BaseException as e:             # noqa: BLE001 - re-raised below, after the barrier
                handover = e
        dist.wait_for_main()                       # no rank leaves before the job is requeued
        if handover is not None and not isinstance(handover, SystemExit):
            raise handover
        raise Preempted(message)
