"""The store, the one place SQL lives: SQLite through aiosqlite (the embedded default) or
PostgreSQL through psycopg, for a group of controllers.

``db.Database`` is what the repositories ask of either (``sqlite.py``, ``postgres.py``:
connections, the write lock, migrations); each other module here is a small repository
for one group of tables.
"""
