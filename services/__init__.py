"""The I/O shell around the pure core: everything that talks to Redis, WebRTC peers and browsers.

    services/
    ├── cli.py           ``earpiece``: reads the settings and wires the packages below together
    ├── bench/           the benchmarks, and the synthetic participants they and the tests use
    ├── web/             the Starlette app: HTTP routes, WHIP/WHEP signaling, the pages, and the
    │                    pages' WebSockets (a room's live channel, the supervisors' lobby)
    ├── media/           one worker's media plane: its rooms, each room's Router and route
    │                    reconciler, Opus forwarding, SDP and ICE, the route log
    ├── streams/         the workers that follow and fold the store's streams: command handling,
    │                    room states, room followers, the audit trail, the lobby, feed trimming
    └── errors.py, settings.py, auth.py, redis_server.py
                         what every package above may use: the error tree, the settings, tokens,
                         a local redis-server

Imports point down only, in the order drawn (cli → bench → web → media → streams → the four
modules → ``projections`` → ``events``), and within a package between its own modules;
``tests/test_layers.py`` holds it.
"""
