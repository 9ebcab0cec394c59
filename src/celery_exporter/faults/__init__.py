"""Broker faults: classify an error, word it for an operator, log each outage once.

Used by the event thread, the poll threads and the `check` command alike, so that all of them
say the same line for the same fault.
"""
