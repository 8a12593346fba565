"""The runtime: the one place that knows containers exist.

* ``containers``    the container runtime seam (create/start/poll/signal/remove/list)
* ``environments``  the environment store seam (what snapshots and services run on)
* ``engines``       engines by name (``O16N_ENGINE``): the two seams plus optional hooks
* ``docker``        the Docker engine, the only package that talks to Docker
* ``fake``          the fake engine: the real agent as local processes (tests, no isolation)
* ``spec``          the typed, hardened container spec
* ``agent_link``    the controller's end of the agent protocol (listener, link)
* ``agent_bundle``  the controller's own agent, staged for every container to mount
* ``sandboxes``     launch / destroy / adopt / reap sandboxes (container + agent link)
* ``sandbox``       one sandbox: its run (time limit, interrupt, grace), end reason, removal
* ``blobs``         files on the controller's disk sent to agents as request blobs
* ``warm_pool``     ready generic containers that sessions and services take
"""
