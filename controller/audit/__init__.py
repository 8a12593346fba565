"""The audit trail's recording seam, below every layer that records (auth, sessions,
services, snapshots) and below ``controller.admin``, which only reads it.

* ``log``    ``AuditLog``: logged as JSON lines at once, written to the store in the background
* ``trail``  ``@audited(action)``, the one line a handler anywhere needs to be recorded
"""
