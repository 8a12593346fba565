"""The runtime: the one place that knows containers exist.

* ``docker_gateway`` every Docker API call, async, on bounded executors
* ``spec``           the typed, hardened container spec
* ``backend``        the narrow protocol of "where containers run"
* ``local_docker``   its first implementation: the local Docker engine
* ``agent_link``     the controller's end of the agent protocol
* ``sandboxes``      launch / destroy / adopt / reap sandboxes (container + agent link)
* ``image``          the runtime image: its content-hash tag and its build (no agent in it)
* ``agent_bundle``   the controller's own agent, staged for every container to mount
"""
