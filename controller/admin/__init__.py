"""Operator administration (Owner role only): users, everyone's sessions, services and
pools, snapshots, batches, the node and its drain, and the audit trail.

It sits on top: nothing below it imports it. The audit trail it reads is recorded through
``controller.audit``; the drain state is ``controller.drain``; what the engine reports
(its facts, containers' memory and CPU) comes from the engine's hooks
(``controller.runtime.engines``); the ``o16n-diagnostics-`` names no one else may use or see
are ``controller.reserved_names``.

* ``common``    the Owner check, query-string validation, timestamps
* ``users``, ``sessions``, ``services``, ``batches``, ``node``, ``audit_routes``: handlers
* ``diagnostics``  ``POST /admin/diagnostics``: every part of the node, end to end
* ``routes``    every ``/admin`` route, for the app factory
"""
