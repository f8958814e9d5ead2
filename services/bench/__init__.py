"""The benchmarks behind ``earpiece bench``, each against a baseline in the same run.

* ``store``: the event store against plain ``XADD``;
* ``pages``: a room's open pages sharing one follower against one follower each;
* ``media``: the media plane against aiortc's ``MediaRelay``. Its parts: ``media_clients``
  (canned Opus out, timed packets in), ``media_signaling`` (people, rooms and each server's
  signaling), ``media_servers`` (the servers under test, as child processes),
  ``media_phases`` (latency, click, capacity, soak) and ``media_report`` (what they found).

``workload`` holds what they write and how they summarise timings. Method and figures:
docs/BENCHMARKS.md.
"""
