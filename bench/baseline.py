"""The baseline consumer: Celery's own event Receiver with a handler that only counts.

It is the ceiling a Python consumer built on `app.events.Receiver` can reach on this machine;
the runner reports the exporter's numbers as ratios against it. The count and the Unix time of
the last event are served over HTTP (`GET /` on `--port` gives `<count> <time>`), from a
thread, so the runner reads them the way it scrapes the exporter.

    python -m bench.baseline --broker-url redis://127.0.0.1:6379/0 --port 9999
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EventCounter:
    """Events seen, by the receiver's thread only; readers see a whole int (the GIL). The
    time of the last one lets the runner time a drain without polling fast."""

    def __init__(self) -> None:
        self.events = 0
        self.last_event = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        self.events += 1
        self.last_event = time.time()


def serve_count(counter: EventCounter, host: str, port: int) -> ThreadingHTTPServer:
    class CountHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{counter.events} {counter.last_event:.6f}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per poll would cost more than the count itself

    server = ThreadingHTTPServer((host, port), CountHandler)
    threading.Thread(target=server.serve_forever, name="count-http", daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count Celery events with celery's Receiver.")
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    from celery import Celery

    app = Celery("bench-baseline", broker=args.broker_url)
    counter = EventCounter()
    serve_count(counter, args.host, args.port)
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": counter})
        receiver.capture(limit=None, timeout=None, wakeup=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
