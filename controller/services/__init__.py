"""Web services: publish, manage and consume (API.md §5, §6).

* ``models``    request bodies, names, versions and parameter types
* ``access``    who may publish, change, delete, and see a service's code
* ``registry``  the services in memory (backed by the store): publish / patch / delete
* ``pool``      warm containers per service version; where a consume request gets one
* ``consume``   where a consume request goes: validate, run in a warm container, answer
* ``swagger``   the per-service Swagger document
* ``routes``    ``/services``, ``/api/{name}/{version}``, pools, realtime (501)
"""
