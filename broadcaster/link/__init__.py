"""The province link: bulletins down from a source information system, results up.

``protocol`` is THE one module that maps our bulletins, plays, loudspeakers
and daily figures to and from the wire JSON (docs/source-system.md): a
vendor's national system is adapted there and nowhere else. ``signing`` signs
and checks every request (HMAC-SHA256, a replay window). ``downstream`` is
this server as a commune under an upstream (the puller, the webhook, the
reporter); ``upstream`` is this server as the province (the feed it serves
its downstream servers, the reports it stores). The SQL is in
``storage/link.py``, the routes in ``api/link.py``.
"""
