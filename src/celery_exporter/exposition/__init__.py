"""What /metrics shows: the metric catalogue, the collectors and the text writer.

Collectors build families at scrape time from copies (a tracker snapshot, the poll's latest
readings, the health record), on the HTTP threads, and never wait on the broker.
"""
