"""Web services: publish, manage and consume (API.md §5, §6).

* ``models``    request bodies, names, versions and parameter types
* ``access``    who may publish, change, delete, and see a service's code
* ``registry``  the services in memory (backed by the store): publish / patch / delete
* ``catalogue`` every published version in memory, by name and version
* ``shape``     a service's JSON (``GET /services``) and its stored parameter definitions
* ``sizing``    a pool's sizes: stored or the defaults, and the checks of a request's
* ``launcher``  a service's containers: restored from its workspace, initCode run once
  (a realtime service's: its model loaded)
* ``environments`` a service's own environment and workspace copy, made and let go of
* ``pool``      warm containers per service version; where a consume request gets one
* ``consume``   where a consume request goes: validate, run in a warm container, answer
* ``swagger``   the per-service Swagger document
* ``routes``    ``/services``, ``/api/{name}/{version}``, pools, ``/realtime-services``
* ``realtime``  realtime services: a model (ONNX, or scikit-learn converted), no code;
  the form, the model's check in a single-use container, its columns (docs/realtime.md)
"""
