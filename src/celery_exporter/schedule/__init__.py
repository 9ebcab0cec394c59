"""The user's own Celery app (`-A/--app`), read once at start-up: its `beat_schedule`.

An input of its own, beside the event stream and the broker poll: nothing here runs after
start-up except the expected-run arithmetic a scrape asks for, and nothing here does I/O.
`celery beat` sends no events and no heartbeats, so the schedule is the only way to know that
a periodic task should have run; the tracker (state/beat_runs.py) knows when it last did.
"""
