"""Local network stand-ins for the download tests: a server that accepts and never answers, a file server, a hub.

Both listen on 127.0.0.1 only and live at most ``lifetime_s`` seconds (the thread ends even if a test forgets to
stop it); nothing leaves the machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

#: Proxy variables that would route a request to 127.0.0.1 elsewhere; the tests clear them.
PROXY_VARS = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


class SilentServer:
    """A TCP server that accepts every connection and never sends a byte (a proxy or host that hangs).

    ``connections`` counts the accepted connections; they are held open until :meth:`stop`.
    """

    def __init__(self, lifetime_s: float = 60.0) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # poll timeout
                continue
            self.connections += 1
            self._held.append(connection)

    def settle(self, seconds: float = 0.3) -> int:
        """Wait for pending connections to be accepted, then return the count."""
        time.sleep(seconds)
        return self.connections

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for connection in self._held:
            connection.close()
        self._socket.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass


class FileServer:
    """An HTTP server on 127.0.0.1 serving the files of ``folder`` (``url`` is its base URL)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeHub(FileServer):
    """A minimal Hugging Face hub on 127.0.0.1: ``/<repo>/resolve/<revision>/<name>`` answers ``files[name]`` with the
    headers huggingface_hub needs (ETag, X-Repo-Commit), any other file 404 ``EntryNotFound``; ``requests`` lists the
    (method, path) pairs it served."""

    COMMIT = "a" * 40

    def __init__(self, files: dict[str, bytes]) -> None:
        hub = self
        self.requests: list[tuple[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                payload = files.get(self.path.rsplit("/", 1)[-1])
                if payload is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("ETag", f'"{hashlib.sha256(payload).hexdigest()}"')
                self.send_header("X-Repo-Commit", FakeHub.COMMIT)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()


class TrickleServer(FileServer):
    """An HTTP server on 127.0.0.1 that answers every GET with a ``size``-byte body announced in full but sends it one
    byte every ``interval_s`` seconds (a transfer no read timeout ever stops); ``started`` is set at the first byte."""

    def __init__(self, size: int = 10**6, interval_s: float = 0.5, lifetime_s: float = 120.0) -> None:
        server = self
        self.started = threading.Event()
        self._stop = threading.Event()
        deadline = time.monotonic() + lifetime_s

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                for _ in range(size):
                    if server._stop.is_set() or time.monotonic() > deadline:
                        return
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:  # the client went away
                        return
                    server.started.set()
                    time.sleep(interval_s)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        super().stop()


def closed_port_url() -> str:
    """A ``http://127.0.0.1:<port>`` URL where nothing listens (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
