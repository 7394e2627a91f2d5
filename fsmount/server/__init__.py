"""``fsmount serve``: the store over HTTP (ASGI on hypercorn with trio).

Modules: :mod:`.app` (authentication, rate limiting, the protocol API), :mod:`.rest` (the
REST shapes, uploads, downloads, HTML listing), :mod:`.auth` (tokens, share secrets,
upload sessions, rate limiter), :mod:`.thumbnails`, :mod:`.openapi`, :mod:`.wire` (JSON
encoding shared with the client), :mod:`.cli` (the verbs); :mod:`.rest_manage` (rename,
folder delete, search), :mod:`.shares` and :mod:`.share_routes` (public share links),
:mod:`.websession` (the web UI's cookie sessions and CSRF), :mod:`.webui`,
:mod:`.webui_assets` and :mod:`.pages` (the web UI).  Importing the package itself
imports nothing heavy, so the client can use :mod:`.wire` without the server's extra.
"""
