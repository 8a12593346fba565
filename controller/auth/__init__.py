"""Authentication and authorization: who is calling, and what they may do.

* ``passwords``  argon2 hashing (off the event loop)
* ``jwt_tokens`` access tokens (python-jose, HS256) and opaque refresh tokens
* ``throttle``   failed-login limits (429 + Retry-After)
* ``directory``  in-memory view of users and token families, kept fresh from the store
* ``service``    login / refresh / revoke
* ``middleware`` the bearer check that attaches the caller's ``Identity`` to a request
* ``routes``     the ``/login`` handlers
"""
