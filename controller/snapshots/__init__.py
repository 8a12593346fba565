"""Snapshots: a captured environment (the engine's store keeps it: on Docker, a committed
image) plus a workspace tarball (API.md §8.6, §9).

* ``archives`` where tarballs are stored on disk, and how a download becomes a zip
* ``manager``  take, list, delete and load snapshots; hand copies to services
* ``routes``   ``/snapshots`` and the snapshot operations on ``/sessions/{id}``
"""
