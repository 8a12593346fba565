"""o16n's controller: the aiohttp server behind the ML Server 9.x operationalization API.

The package layout is the architecture:

* ``app``        the factory that wires everything (start here)
* ``auth``       who is calling: login, tokens, roles (``auth.middleware`` checks tokens)
* ``runtime``    the one place that talks to Docker and to in-container agents
* ``store``      SQLite, the one place SQL lives
* ``http``       middlewares, body parsing, JSON responses
* ``status``     ``GET /status`` (``health`` holds its cached slow checks)
* ``docs``       the Swagger document at ``GET /swagger.json``
"""

__version__ = "0.1.0"
