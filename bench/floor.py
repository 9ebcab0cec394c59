"""The floor consumers: the least a Python process must do to take in every event.

No Celery, no kombu on the message path: read each message off the broker with the bare
client library and decode every event the way the exporter must (the kombu envelope, the
base64 body and the event JSON with orjson on Redis; the message body with orjson on AMQP),
then count. Nothing faster decodes the same events in Python on this machine, so the runner
reports the exporter's ingest as a ratio of this floor as well as of celery's Receiver.

- Redis: redis-py (with hiredis, as the exporter has) pub/sub; `read_response` on the
  subscription's connection, the call the exporter's own reader uses. Consumer kind
  `floor-default` is the same reader with redis-py's default RESP3 push handler; kind
  `floor-socket` (`--socket-reader`) reads the socket itself in 64 kB chunks and feeds them
  to hiredis' Reader, without redis-py's per-message call: the paired mode takes the faster of
  the two per round as the floor.
- RabbitMQ: py-amqp: an auto-delete queue bound with `#` to the `celeryev` topic exchange,
  `basic_consume(no_ack=True)` and `drain_events`.

Served like the baseline: `GET /` on `--port` gives `<count> <time of the last event>`.

    python -m bench.floor --broker-url redis://127.0.0.1:6379/0 --port 9999
"""

from __future__ import annotations

import argparse
import binascii
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from bench.baseline import EventCounter, serve_count

EXCHANGE = "celeryev"


def events_in(body: Any) -> int:
    return len(body) if type(body) is list else 1


def consume_redis(url: str, counter: EventCounter, default_push_handler: bool = False) -> None:
    import redis

    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    # Over RESP3 (redis-py 8's default), the default push handler formats every message into
    # a debug string: half the reading cost. The floor does without it, as the exporter does;
    # `floor-default` (--default-push-handler) keeps it, as a naive reader would.
    pubsub: Any = client.pubsub()
    if not default_push_handler:
        pubsub.push_handler_func = lambda response: response
    pubsub.psubscribe(f"/{db}.{EXCHANGE}/*")  # kombu's fanout topic, fanout_patterns on
    connection = pubsub.connection
    read = connection.read_response
    while True:
        try:
            response = read(timeout=1.0, disconnect_on_error=False, push_request=True)
        except redis.TimeoutError:
            continue
        if response[0] != b"pmessage":
            continue
        envelope = orjson.loads(response[3])
        body = orjson.loads(binascii.a2b_base64(envelope["body"]))
        counter.events += events_in(body)
        counter.last_event = time.time()


CHUNK = 65536  # bytes per recv(): one call hands hiredis many messages of a backlog


def resp(*parts: bytes) -> bytes:
    """One RESP2 command, as redis-py would send it."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def consume_redis_socket(url: str, counter: EventCounter) -> None:
    import socket
    from urllib.parse import urlparse

    import hiredis

    where = urlparse(url)
    db = int((where.path or "/0").lstrip("/") or 0)
    sock = socket.create_connection((where.hostname or "127.0.0.1", where.port or 6379))
    if where.password:
        sock.sendall(resp(b"AUTH", where.password.encode()))
    sock.sendall(resp(b"PSUBSCRIBE", f"/{db}.{EXCHANGE}/*".encode()))
    reader = hiredis.Reader()
    recv, feed, gets = sock.recv, reader.feed, reader.gets
    while True:
        data = recv(CHUNK)
        if not data:
            raise ConnectionError("redis closed the connection")
        feed(data)
        while (message := gets()) is not False:
            if type(message) is not list or message[0] != b"pmessage":
                continue  # the AUTH reply, the subscribe confirmation
            envelope = orjson.loads(message[3])
            body = orjson.loads(binascii.a2b_base64(envelope["body"]))
            counter.events += events_in(body)
            counter.last_event = time.time()


def consume_amqp(url: str, counter: EventCounter) -> None:
    import amqp
    from kombu.connection import Connection  # only to read the URL as Celery does

    info = Connection(url)
    conn = amqp.Connection(
        f"{info.hostname}:{info.port or 5672}",
        userid=info.userid,
        password=info.password,
        virtual_host=info.virtual_host or "/",
    )
    conn.connect()
    channel = conn.channel()
    queue = f"{EXCHANGE}.floor.{uuid.uuid4()}"
    channel.exchange_declare(EXCHANGE, "topic", durable=True, auto_delete=False)
    arguments = {"x-message-ttl": 5000, "x-expires": 60000}  # as celery's Receiver declares
    channel.queue_declare(queue, durable=False, auto_delete=True, arguments=arguments)
    channel.queue_bind(queue, EXCHANGE, "#")

    def on_message(message: Any) -> None:
        counter.events += events_in(orjson.loads(message.body))
        counter.last_event = time.time()

    channel.basic_consume(queue, no_ack=True, callback=on_message)
    while True:
        try:
            conn.drain_events(timeout=1.0)
        except TimeoutError:
            continue


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count Celery events with a bare client.")
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--default-push-handler",
        action="store_true",
        help="Redis: keep redis-py's default RESP3 push handler (a debug string per message)",
    )
    parser.add_argument(
        "--socket-reader",
        action="store_true",
        help="Redis: read the socket in 64 kB chunks into hiredis' Reader (no redis-py)",
    )
    args = parser.parse_args(argv)
    counter = EventCounter()
    serve_count(counter, args.host, args.port)
    if args.broker_url.startswith("redis") and args.socket_reader:
        consume_redis_socket(args.broker_url, counter)
    elif args.broker_url.startswith("redis"):
        consume_redis(args.broker_url, counter, args.default_push_handler)
    else:
        consume_amqp(args.broker_url, counter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
