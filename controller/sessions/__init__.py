"""Interactive sessions: one hardened container per session (API.md §8).

* ``warm_pool``  pre-started containers, so creating a session does not wait for one
* ``manager``    where sessions start, run code, die, are adopted after a restart and reaped
* ``models``     request and response bodies
* ``routes``     the ``/sessions`` handlers
"""
