"""Operator administration (Owner role only): users, everyone's sessions, services and
pools, snapshots, batches, the node and its drain, and the audit trail.

* ``audit``     the audit trail: logged as JSON lines at once, written in the background
* ``trail``     ``@audited(action)``, the one line a handler anywhere needs to be recorded
* ``drain``     the drain state and the middleware that refuses new work while draining
* ``stats``     memory/CPU samples and ``docker system df``, bounded and cached
* ``common``    the Owner check, query-string validation, timestamps
* ``users``, ``sessions``, ``services``, ``batches``, ``node``, ``audit_routes``: handlers
* ``diagnostics``  ``POST /admin/diagnostics``: every part of the node, end to end
* ``reserved``  the ``o16n-diagnostics-`` names no one else may use or see
* ``routes``    every ``/admin`` route, for the app factory
"""
