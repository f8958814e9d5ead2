"""The web face of one worker: a Starlette app, its pages and their WebSockets.

``app`` assembles the routes and the workers beside them; ``http`` holds what every HTTP route
shares (bearer authentication, bounded bodies, JSON errors); ``signaling`` is WHIP/WHEP in
front of the media plane; ``sockets`` is what the pages' WebSockets share (first-message auth,
close codes); ``live_channel`` is a room's socket and ``lobby_socket`` the supervisors'; ``pages``
serves ``static/`` under a strict CSP; ``server`` runs the app under uvicorn.

May import: ``services.media``, ``services.streams``, the top modules of ``services``,
``projections``, ``events``.
"""
