"""One operation at a time on a Generator's engine (the rule in Generator's docstring): the gate
that admits operations, and the iterator that generate() and chat() return.

Refusing at once (BusyError) rather than queueing keeps a caller from blocking behind a long
generation it cannot see, and a suspended generation is superseded rather than allowed to block
the Generator, because nothing says its consumer will ever come back (issue 16).
"""

from __future__ import annotations

import threading
from collections.abc import Generator as PyGenerator
from typing import Callable, Iterator, Optional

from .errors import BusyError, Error

CLOSED = "Generator is closed"
SUPERSEDED = (
    "this generation was superseded: another operation (generate, chat, logits or setting skip) "
    "started on the Generator while the iterator was suspended, and ended it"
)


class OperationGate:
    """Admits one operation at a time.

    Usage, with a fresh ``token = object()`` per operation::

        try:
            gate.begin(token)
            ...  # use the engine
        finally:
            gate.end(token)

    begin() inside the ``try`` so that an interrupt landing just after admission still ends the
    operation. The callbacks (``cancel`` stops the running operation and must not block) are
    passed per call: the gate keeps no reference to its Generator, so that a closed Generator
    is freed by reference counting rather than waiting for the cycle collector.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holder: Optional[object] = None  # the running operation's token
        self._holder_thread: Optional[int] = None
        self._holder_stream: Optional[TextStream] = None  # set while one of its steps runs
        self._stream: Optional[TextStream] = None  # the unfinished generation, if any
        self._closing = False  # close() has begun: nothing new is admitted
        self._closed = False  # the engine is freed
        self._deferred_free: Optional[Callable[[], None]] = None

    def begin(
        self,
        token: object,
        step_of: Optional[TextStream] = None,
        clear_cancel: Optional[Callable[[], None]] = None,
    ) -> None:
        """Admit an operation or raise (BusyError, or Error when closed or superseded). Any
        operation but a step of the current generation supersedes that generation.
        ``clear_cancel`` runs on admission, under the gate's lock, so that it cannot undo the
        cancel of a close() that has begun."""
        stale = None
        with self._cond:
            if self._closing:
                raise Error(CLOSED)
            if step_of is not None and step_of is not self._stream:
                if step_of.ended_by is None:  # closed by its own close() meanwhile
                    raise StopIteration
                raise Error(step_of.ended_by)
            if self._holder is not None:
                if self._holder_thread == threading.get_ident():
                    raise BusyError(
                        "Generator is busy: called from inside one of its own running "
                        "operations (a signal handler or callback)"
                    )
                raise BusyError(
                    "Generator is busy: another thread is running an operation on it "
                    "(one operation at a time per Generator; cancel() and close() always work)"
                )
            self._holder, self._holder_thread = token, threading.get_ident()
            self._holder_stream = step_of
            if clear_cancel is not None:
                clear_cancel()
            if step_of is None and self._stream is not None:
                stale, self._stream = self._stream, None
                stale.ended_by = SUPERSEDED
        if stale is not None:
            stale.close_steps()

    def install(self, token: object, stream: TextStream) -> None:
        """Make ``stream`` the current generation (by the operation that created it)."""
        with self._cond:
            if self._holder is not token:
                raise RuntimeError("install() outside the creating operation")
            self._stream = stream

    def end(self, token: object, finished: Optional[TextStream] = None) -> None:
        """End the operation ``token`` (no-op if it was never admitted). ``finished``: the
        generation whose step this was has ended for good."""
        with self._cond:
            if self._holder is not token:
                return
            if finished is not None and finished is self._stream:
                self._stream = None
            free, self._deferred_free = self._deferred_free, None
            if free is None:
                self._release()
                return
        self._close_as(token, free)  # a close() from inside this operation was waiting for it

    def close(self, free: Callable[[], None], cancel: Callable[[], None]) -> None:
        """Refuse new operations, cancel the running one, wait for it, then close the current
        generation and call ``free``. Idempotent. From inside the running operation's own
        thread (a signal handler) it cannot wait: ``free`` then runs when that operation ends."""
        token = object()
        with self._cond:
            if self._closed:
                return
            self._closing = True
            if self._holder is not None:
                cancel()
                if self._holder_thread == threading.get_ident():
                    self._deferred_free = free
                    return
                while self._holder is not None:
                    self._cond.wait()
                if self._closed:  # another close() did it while this one waited
                    return
            self._holder, self._holder_thread = token, threading.get_ident()
        self._close_as(token, free)

    def close_stream(self, stream: TextStream, cancel: Callable[[], None]) -> None:
        """Close one generation (TextStream.close). If one of its steps is running in another
        thread, cancel it and wait for the step to end (the generation then ends "cancelled");
        from inside that step (a signal handler), only cancel it."""
        token = object()
        with self._cond:
            while True:
                if stream is not self._stream:  # finished, superseded or closed meanwhile
                    return
                if self._holder is None:
                    break
                if self._holder_stream is stream:
                    cancel()
                if self._holder_thread == threading.get_ident():
                    return
                self._cond.wait()
            self._holder, self._holder_thread = token, threading.get_ident()
            self._stream = None
            stream.mark_finished()
        try:
            stream.close_steps()
        finally:
            self.end(token)

    def _close_as(self, token: object, free: Callable[[], None]) -> None:
        # Runs holding the gate as ``token``.
        with self._cond:
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.ended_by = CLOSED
        try:
            if stream is not None:
                stream.close_steps()
        finally:
            try:
                free()
            finally:
                with self._cond:
                    self._closed = True
                    self._release()

    def _release(self) -> None:
        # Called holding self._cond.
        self._holder = self._holder_thread = self._holder_stream = None
        self._cond.notify_all()


class TextStream(Iterator[str]):
    """The iterator generate() and chat() return: text pieces of one generation.

    Each next() is one operation of the Generator (BusyError while another thread runs one).
    It may be consumed from any thread. A later next() after the generation was superseded by
    another operation, or after the Generator was closed, raises Error saying so.
    """

    def __init__(
        self,
        gate: OperationGate,
        steps: PyGenerator[str, None, None],
        cancel: Callable[[], None],
    ) -> None:
        self._gate = gate
        self._steps = steps
        self._cancel = cancel
        self._finished = False
        self.ended_by: Optional[str] = None  # why it was closed from outside, if it was

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self.ended_by is not None:
            raise Error(self.ended_by)
        if self._finished:
            raise StopIteration
        token = object()
        finished = None
        try:
            self._gate.begin(token, step_of=self)
            try:
                return next(self._steps)
            except BaseException:  # StopIteration, an error or an interrupt: it is over
                self._finished = True
                finished = self
                raise
        finally:
            self._gate.end(token, finished)

    def close(self) -> None:
        """Stop the generation (finish reason "cancelled"); it then yields nothing more. From
        another thread while a step runs: cancels that step and waits for it."""
        if not self._finished and self.ended_by is None:
            self._gate.close_stream(self, self._cancel)

    def mark_finished(self) -> None:
        self._finished = True

    def close_steps(self) -> None:
        """Close the underlying steps (by the gate, holding it)."""
        self._finished = True
        self._steps.close()
