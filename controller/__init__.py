"""o16n's controller: the aiohttp server behind the ML Server 9.x operationalization API.

The package layout is the architecture (its layers and the engine seam:
``docs/architecture.md``):

* ``app``        the factory that wires everything (start here)
* ``auth``       who is calling: login, tokens, roles (``auth.middleware`` checks tokens)
* ``runtime``    where code runs: the engine seam, its engines (``runtime.docker``, the only
                 package that talks to Docker) and the link to in-container agents
* ``store``      SQLite, the one place SQL lives
* ``http``       middlewares, body parsing, JSON responses
* ``status``     ``GET /status`` (``health`` holds its cached slow checks)
* ``docs``       the Swagger document at ``GET /swagger.json``
"""

__version__ = "0.1.0"
