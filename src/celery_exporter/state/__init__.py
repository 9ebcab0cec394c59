"""What the events build: the tracker and its task and worker tables.

Pure code: no I/O, no celery, no kombu, an injected clock (tests/unit/state hold the package to
that). Written only by the event thread, copied under the tracker's lock by a scrape. Memory is
bounded by the label caps and the in-flight table's size, never by the number of tasks seen.
This is the package the optional mypyc build compiles (setup.py).
"""
