"""The workers that follow and fold the event store's streams, for the packages above.

``command_handler`` turns a command into events (decide → append at the expected version);
``room_states`` keeps each room's current state (snapshot + tail) and follows a room's stream as
states; ``room_followers`` shares one follower per room among the pages; ``audit_trail`` and
``lobby`` are the consumer groups of the partition feeds (the hash-chained audit log, the
supervisors' lobby); ``feed_trimming`` drops feed entries every group has handled.

May import: ``events``, ``projections`` and the top modules of ``services`` (errors, settings,
auth). Nothing here knows of WebRTC or HTTP.
"""
