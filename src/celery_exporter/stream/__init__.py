"""The event stream: connect to the broker, read Celery events off it, decode them.

The event thread lives here (consumer.py). It hands each decoded event to the tracker
(state/) and reconnects forever on broker errors. On Redis the events come straight off the
pub/sub socket (redis_reader.py); on other transports through kombu.
"""
