"""Asynchronous batch consumption of a service (API.md §7).

* ``runner``  where a batch runs: durable in SQLite, resumed after a restart, no time limit
* ``routes``  the ``/api/{name}/{version}/batch`` handlers
* ``swagger`` the batch part of the per-service document
"""
