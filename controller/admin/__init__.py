"""Operator administration (Owner role only): users, everyone's sessions, services and
pools, snapshots, batches, the node and its drain, and the audit trail.

It sits on top: nothing below it imports it. The audit trail it reads is recorded through
``controller.audit``; the drain state is ``controller.drain``; the engine sampler is
``controller.runtime.docker.stats``; the ``o16n-diagnostics-`` names no one else may use or see
are ``controller.reserved_names``.

* ``common``    the Owner check, query-string validation, timestamps
* ``users``, ``sessions``, ``services``, ``batches``, ``node``, ``audit_routes``: handlers
* ``diagnostics``  ``POST /admin/diagnostics``: every part of the node, end to end
* ``routes``    every ``/admin`` route, for the app factory
"""
