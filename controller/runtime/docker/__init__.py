"""The Docker engine: everything o16n knows of Docker, and the only place that talks to it.

* ``gateway``       every Docker API call, async, on bounded executors
* ``local_docker``  the compute backend on the local Docker engine, the seccomp profile
* ``image``         the runtime image: its content-hash tag and its build
* ``runc``          whether the engine's runc is fixed for CVE-2024-21626
* ``stats``         memory and CPU of containers, disk use of the engine
"""
