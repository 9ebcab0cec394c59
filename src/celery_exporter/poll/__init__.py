"""The broker poll: queue lengths per transport, worker inspection, newly appeared workers.

Poll threads of their own, on an interval and with timeouts, so that a scrape never does broker
I/O. Results are kept as the latest readings for the exposition to read.
"""
