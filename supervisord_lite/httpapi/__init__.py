"""The HTTP API: aiohttp's server, the routes, Host names, metrics and the status page.

Owns: ``server`` (aiohttp's server: routes, JSON errors, limits), ``hosts``
(which Host names are served), ``metrics`` (Prometheus's text format) and ``page``
(the status page's headers; its files are in ``static/``). May import ``snapshots``,
``host``, ``config``, ``log``.
"""
