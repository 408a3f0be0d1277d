"""A threaded WSGI server in a background thread, so concurrent calls really overlap."""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from types import TracebackType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from simulator.app import SimulatorApp


class _QuietHandler(WSGIRequestHandler):
    """No access log: a GET call would put its token in the log line."""

    def log_message(self, format: str, *args: object) -> None:
        return


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True


class RunningServer:
    """A server answering on ``url`` until ``stop()``; also a context manager."""

    def __init__(self, httpd: ThreadingWSGIServer, thread: threading.Thread | None) -> None:
        self.httpd = httpd
        self.thread = thread
        self.host, self.port = httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def make_threaded_server(app: SimulatorApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingWSGIServer:
    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler)


def serve(app: SimulatorApp, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start serving ``app`` in a daemon thread; ``port=0`` picks a free port."""
    httpd = make_threaded_server(app, host, port)
    thread = threading.Thread(target=httpd.serve_forever, name="moodle-simulator", daemon=True)
    thread.start()
    return RunningServer(httpd, thread)
