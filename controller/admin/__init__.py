"""Operator administration (Owner role only): users, everyone's sessions, services and
pools, snapshots, batches, the node and its drain, and the audit trail.

* ``audit``    the audit trail: queued, written off the request path, logged as JSON lines
* ``trail``    ``@audited(action)`` for handlers anywhere in the controller
* ``drain``    the drain state and the middleware that refuses new work while draining
* ``users``, ``sessions``, ``services``, ``node``, ``audit_routes``  the ``/admin`` handlers
* ``routes``   all ``/admin`` routes, for the app factory
"""
