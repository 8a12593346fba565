"""Realtime services: a model (ONNX, or scikit-learn converted to ONNX) scored by onnxruntime
in the sandbox containers, with no code of the publisher's (API.md §5.12, §6.5).

* ``model``    a model's columns and tensors as the controller knows them (never the model
  itself), the checks of a consume request's data frame and of a container's answer
* ``upload``   the multipart form of ``POST|PATCH /realtime-services``: the model spooled to
  disk as it arrives, ``description`` and ``operationId``
* ``prepare``  a single-use container checks (and converts) the uploaded model

The controller never opens a model: a pickle runs code, and an ONNX graph is parsed by
the containers only. ``docs/realtime.md`` says what is accepted and why.
"""
