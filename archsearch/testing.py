"""Stand-ins for benchmarks and tests of the search machinery: a trainer of fixed cost, a database outage.

Select it with ``+sweep.fit._target_=archsearch.testing.FixedCostFit +sweep.fit.seconds=1.0``:
every trial then waits ``seconds`` instead of training and reports an accuracy that is a fixed
function of the network's size, so what is measured or tested is storage, tracking, workers and
export, not the trainer. Never part of a real search.

:class:`OutageProxy` sits between the workers and a database server and can refuse every
connection for a while, cutting the open ones: a server restart, without stopping the server
(which other users of it would notice) or needing the rights to.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from archsearch.train.result import TrainResult
from archsearch.train.settings import TrainerSettings

__all__ = ["FixedCostFit", "OutageProxy"]


class FixedCostFit:
    """Called like :func:`archsearch.train.fit.fit`; sleeps ``seconds`` over ``epochs`` epochs.

    Args:
        seconds: wall time of one call (split evenly over the epochs).
        epochs: epochs reported through ``on_epoch_end`` (what multi-fidelity rules see).
    """

    def __init__(self, seconds: float = 1.0, epochs: int = 1) -> None:
        self.seconds = float(seconds)
        self.epochs = max(1, int(epochs))

    def __call__(
        self,
        model: Any,
        data: Any,
        settings: TrainerSettings,
        *,
        seed: int = 0,
        on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
        evaluate_test: bool = False,
    ) -> TrainResult:
        started = time.perf_counter()
        params = sum(p.numel() for p in model.parameters())
        # Bigger nets score higher, with a little scatter, so a front trades accuracy off against size.
        acc = min(0.99, 0.1 * math.log10(max(params, 1)) + 0.003 * (params % 7))
        history: list[dict[str, float]] = []
        epochs_done = 0
        for epoch in range(1, self.epochs + 1):
            time.sleep(self.seconds / self.epochs)
            epochs_done = epoch
            metrics = {
                "epoch": float(epoch),
                "train_loss": 1.0 / epoch,
                "val_acc": acc * epoch / self.epochs,
                "val_acc_best": acc * epoch / self.epochs,
                "lr": 0.0,
                "seconds": time.perf_counter() - started,
                "images_per_s": 0.0,
            }
            history.append(metrics)
            if on_epoch_end is not None and on_epoch_end(epoch, metrics):
                break
        last = history[-1]["val_acc"]
        return TrainResult(
            val_acc_best=last,
            val_acc_last=last,
            test_acc=last if evaluate_test else None,
            history=history,
            images_per_s=0.0,
            epochs_done=epochs_done,
            steps_done=epochs_done,
            steps_total=self.epochs,
            budget_exhausted=False,
            stopped_early=epochs_done < self.epochs,
            seconds=time.perf_counter() - started,
        )


class OutageProxy:
    """A TCP proxy on 127.0.0.1 to ``host:port`` that :meth:`cut` makes refuse connections.

    Point the workers at ``127.0.0.1:<port>`` (the :attr:`port` it listens on) instead of the
    server. While cut, the proxy closes every open connection and refuses new ones (the listening
    socket is closed, so a client gets "connection refused", as from a stopped server).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = _free_port()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutageProxy:
        self._listen()
        return self

    def cut(self, seconds: float) -> None:
        """Refuse and drop every connection for ``seconds``, then accept again (blocks)."""
        self._close_listener()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()
        time.sleep(seconds)
        self._listen()

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or stopped
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
