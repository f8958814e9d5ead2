"""The media plane of one worker process: who hears whom, enforced where the audio is forwarded.

``plane`` owns the worker's rooms and their peer connections (one per WHIP or WHEP session);
each room has a ``router.Router``, the only thing that connects a producer to a consumer and the
second guard of whisper separation, and a ``route_reconciler.RouteReconciler`` that follows the
room's stream and moves the router to the routes the state implies. ``opus_forwarding`` hands
received Opus payloads to the consumers' tracks without decoding; ``sdp`` checks offers and
shapes answers; ``ice`` picks the local addresses; ``route_log`` records every route applied,
removed or refused.

May import: ``services.streams``, the top modules of ``services``, ``projections``, ``events``.
Nothing here knows of HTTP: signaling lives in ``services.web.signaling``.
"""
