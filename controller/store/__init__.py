"""The store: SQLite through aiosqlite, the one place SQL lives.

``db.Database`` owns the connection, WAL mode, the write lock and migrations;
each other module here is a small repository for one group of tables.
"""
