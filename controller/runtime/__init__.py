"""The runtime: the one place that knows containers exist.

* ``docker``         the Docker engine: its gateway, the backend, image, runc, stats
* ``spec``           the typed, hardened container spec
* ``backend``        the narrow protocol of "where containers run"
* ``agent_link``     the controller's end of the agent protocol
* ``sandboxes``      launch / destroy / adopt / reap sandboxes (container + agent link)
* ``agent_bundle``   the controller's own agent, staged for every container to mount
"""
