"""``fsmount serve``: the store over HTTP (ASGI on hypercorn with trio).

Modules: :mod:`.app` (authentication, rate limiting, the protocol API), :mod:`.rest` (the
REST shapes, uploads, downloads, HTML listing), :mod:`.auth` (tokens, share secrets,
upload sessions, rate limiter), :mod:`.thumbnails`, :mod:`.openapi`, :mod:`.wire` (JSON
encoding shared with the client), :mod:`.cli` (the verbs).  Importing the package itself
imports nothing heavy, so the client can use :mod:`.wire` without the server's extra.
"""
