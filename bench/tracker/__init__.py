"""The tracker tool (`python -m bench.tracker ingest|diff|instructions`): this version of the
tracker against another (`--baseline-src`, an older checkout's src/), in one process.

- ingest: events per second of each, fed the same stream in alternating chunks;
- diff: that both count the same, on clean, corrupted, disordered and tightly capped streams;
- instructions: machine instructions per event of each, under valgrind.

versions.py loads either layout (the state/ subpackage now, the top level before it).
"""
