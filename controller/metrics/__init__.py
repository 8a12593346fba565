"""Prometheus metrics: what o16n counts and where ``GET /metrics`` is served.

* ``definitions`` every process-wide metric (HTTP, consume/execute, containers, logins,
                  Docker and database calls, build info, the process's own), in one
                  ``CollectorRegistry`` of ours, not the client library's global one. A low
                  layer: the store and the runtime import it to time their calls.
* ``http``        the HTTP middleware (requests by route template, in flight), which
                  also times the handlers marked ``@timed`` (consume, execute) by outcome.
* ``live``        what is read at scrape time from one app's live objects (service pools,
                  warm pools, sessions, batch records), in a registry of that app's,
                  registered by ``metrics_ctx`` while the app runs.
* ``routes``      ``GET /metrics`` itself: an Owner's token or ``O16N_METRICS_TOKEN``.

The names and labels are a contract (a Grafana dashboard is written against them): add,
never rename. No label ever holds a user name, an id or a token, and only services that
exist get a series (a consume of a name nobody published creates none).
"""
