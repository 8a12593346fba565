"""Compute nodes, the operator's side: the list of Docker engines containers may run on.

* ``registry``  ``ComputeNodes``: the stored list (``store/nodes.py``) and the engine's
  ``NodeControl`` kept in step, one change at a time; ``O16N_COMPUTE_NODES`` applied at start.
* ``routes``    ML Server 9.3's ``/computenodes`` (``GET``/``POST``/``PUT``/``DELETE``), Owner only.

The engine reaches the nodes (``controller/runtime/docker/``); ``/status`` shows them
(``health.py``) and ``/admin/nodes`` describes and drains them (``admin/nodes.py``).
"""
