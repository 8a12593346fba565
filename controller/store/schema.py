"""Versioned schema migrations. Entry N brings the schema from version N-1 to N.

Never edit a migration that has shipped: append a new one. ``PRAGMA user_version``
(SQLite) or the ``schema_version`` table (PostgreSQL) records how far a database has come.

One list serves both databases: the scripts are written in SQLite's types, which the
PostgreSQL backend translates (``postgres.py``: ``REAL`` is ``DOUBLE PRECISION``, an
``INTEGER`` is a ``BIGINT``, an ``INTEGER PRIMARY KEY`` an identity column).
``POSTGRES_ONLY`` adds what only PostgreSQL needs, run right after the migration it is keyed by.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: users and refresh-token families
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('Owner', 'Contributor', 'Reader')),
        disabled      INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL
    );
    CREATE TABLE token_families (
        id                 TEXT PRIMARY KEY,
        user_id            INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        started_at         REAL NOT NULL,
        touched_at         REAL NOT NULL,
        generation         INTEGER NOT NULL,
        revoked_at         REAL,
        revoke_reason      TEXT
    );
    CREATE INDEX token_families_touched ON token_families(touched_at);
    CREATE INDEX token_families_user ON token_families(user_id);
    CREATE TABLE refresh_tokens (
        token_hash  TEXT PRIMARY KEY,
        family_id   TEXT NOT NULL REFERENCES token_families(id) ON DELETE CASCADE,
        generation  INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
    """,
    # 2: sessions and their execution history
    """
    CREATE TABLE sessions (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL,
        owner_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        runtime        TEXT NOT NULL,
        container_key  TEXT NOT NULL,
        container_id   TEXT NOT NULL,
        state          TEXT NOT NULL CHECK (state IN ('alive', 'dead')),
        dead_reason    TEXT,
        created_at     REAL NOT NULL,
        last_used_at   REAL NOT NULL,
        console_output TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX sessions_owner ON sessions(owner_id, state);
    CREATE TABLE session_history (
        session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        code        TEXT NOT NULL,
        executed_at REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    """,
    # 3: snapshots and web services
    """
    CREATE TABLE snapshots (
        id            TEXT PRIMARY KEY,
        name          TEXT,
        owner_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        runtime       TEXT NOT NULL,
        image         TEXT NOT NULL,
        archive       TEXT NOT NULL,
        size          INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        skipped       TEXT NOT NULL DEFAULT '{}',
        created_at    REAL NOT NULL,
        creation_time TEXT NOT NULL
    );
    CREATE INDEX snapshots_owner ON snapshots(owner_id);
    CREATE TABLE services (
        name          TEXT NOT NULL,
        version       TEXT NOT NULL,
        key           TEXT NOT NULL UNIQUE,
        publisher_id  INTEGER NOT NULL REFERENCES users(id),
        created_at    REAL NOT NULL,
        creation_time TEXT NOT NULL,
        runtime       TEXT NOT NULL,
        description   TEXT,
        code          TEXT NOT NULL,
        init_code     TEXT,
        operation_id  TEXT,
        inputs        TEXT NOT NULL,
        outputs       TEXT NOT NULL,
        output_files  TEXT NOT NULL,
        snapshot_id   TEXT,
        image         TEXT NOT NULL,
        archive       TEXT,
        pool_initial  INTEGER,
        pool_max      INTEGER,
        isolation     TEXT NOT NULL DEFAULT 'shared',
        PRIMARY KEY (name, version)
    );
    """,
    # 4: asynchronous batch executions of a service
    """
    CREATE TABLE batches (
        id              TEXT PRIMARY KEY,
        service_name    TEXT NOT NULL,
        service_version TEXT NOT NULL,
        owner_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        parallel_count  INTEGER NOT NULL,
        state           TEXT NOT NULL,
        total           INTEGER NOT NULL,
        completed       INTEGER NOT NULL DEFAULT 0,
        deleted         INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        created_at      REAL NOT NULL,
        finished_at     REAL,
        FOREIGN KEY (service_name, service_version)
            REFERENCES services(name, version) ON DELETE CASCADE
    );
    CREATE INDEX batches_service ON batches(service_name, service_version, owner_id);
    CREATE TABLE batch_items (
        batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        idx      INTEGER NOT NULL,
        input    TEXT NOT NULL,
        result   TEXT,
        PRIMARY KEY (batch_id, idx)
    );
    """,
    # 5: snapshots whose container changed nothing of its image; services that can run on
    #    the runtime image itself (and so start from preloaded warm containers)
    """
    ALTER TABLE snapshots ADD COLUMN pristine INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN generic INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: operator administration: when each user last logged in, and the append-only
    #    audit trail (never a secret, password, token or code: code as its SHA-256)
    """
    ALTER TABLE users ADD COLUMN last_login_at REAL;
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          REAL NOT NULL,
        actor       TEXT NOT NULL,
        address     TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        status      INTEGER,
        request_id  TEXT,
        detail      TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit(at);
    """,
    # 7: directory users (LDAP / Active Directory, Azure AD): where an account comes from,
    #    the directory's own id for it, and when its roles were last looked up there
    """
    ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
        CHECK (source IN ('local', 'ldap', 'aad'));
    ALTER TABLE users ADD COLUMN external_id TEXT;
    ALTER TABLE users ADD COLUMN display_name TEXT;
    ALTER TABLE users ADD COLUMN email TEXT;
    ALTER TABLE users ADD COLUMN roles_checked_at REAL;
    CREATE UNIQUE INDEX users_external ON users(source, external_id)
        WHERE external_id IS NOT NULL;
    """,
    # 8: compute nodes (/computenodes, O16N_COMPUTE_NODES): Docker engine addresses,
    #    normalised (controller.runtime.nodes), in the order they were configured
    """
    CREATE TABLE compute_nodes (
        entry     TEXT PRIMARY KEY,
        position  INTEGER NOT NULL,
        added_at  REAL NOT NULL,
        added_by  TEXT NOT NULL
    );
    """,
    # 9: the controllers of a group sharing this database (each heartbeats its row; a row
    #    whose expires_at has passed is a dead controller's) and named leases, so a job
    #    meant to run once across the group runs on the one controller holding its lease
    """
    CREATE TABLE controllers (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        internal_url  TEXT NOT NULL,
        started_at    REAL NOT NULL,
        heartbeat_at  REAL NOT NULL,
        expires_at    REAL NOT NULL
    );
    CREATE TABLE leases (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        expires_at  REAL NOT NULL
    );
    """,
    # 10: which controller of the group holds each session (its O16N_INSTANCE; NULL: a row
    #     from before, held by the one controller there was), where the session's agent
    #     dials, and which instance's label its container carries (the one that made it:
    #     a label never changes, however often the session is taken over), so that
    #     another controller can find the container and take the session over
    """
    ALTER TABLE sessions ADD COLUMN controller TEXT;
    ALTER TABLE sessions ADD COLUMN endpoint TEXT;
    ALTER TABLE sessions ADD COLUMN origin TEXT;
    CREATE INDEX sessions_controller ON sessions(controller, state);
    """,
    # 11: a realtime service's model: the columns and tensors of its ONNX graph (JSON; NULL
    #     for a Python service), its ONNX file named by ``archive``
    """
    ALTER TABLE services ADD COLUMN model_schema TEXT;
    """,
    # 12: a service row's revision, a random token each insert and change makes anew: a
    #     controller of the group changes or deletes the row as it read it, never one
    #     another changed (or deleted and published again) meanwhile
    """
    ALTER TABLE services ADD COLUMN revision TEXT NOT NULL DEFAULT '';
    """,
]

#: Statements PostgreSQL runs after the migration of the same number. 8: SQLite's
#: ``data_version`` has no equivalent there, so statement-level triggers count the changes
#: to each topic's tables in ``store_changes``, which every controller of a group polls:
#: ``auth`` (users and tokens: a revocation reaches them all within a second,
#: ``auth/directory.py``), ``services`` (the catalogue), ``nodes`` (the compute nodes).
#: Keyed to 8, the last migration before PostgreSQL was supported, so every PostgreSQL
#: database has it.
POSTGRES_ONLY: dict[int, str] = {
    8: """
    CREATE TABLE store_changes (
        topic       TEXT PRIMARY KEY,
        generation  INTEGER NOT NULL
    );
    INSERT INTO store_changes (topic, generation)
        VALUES ('auth', 0), ('services', 0), ('nodes', 0);
    CREATE FUNCTION o16n_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE store_changes SET generation = generation + 1 WHERE topic = TG_ARGV[0];
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
        FOR EACH STATEMENT EXECUTE FUNCTION o16n_count_change('auth');
    CREATE TRIGGER token_families_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON token_families
        FOR EACH STATEMENT EXECUTE FUNCTION o16n_count_change('auth');
    CREATE TRIGGER refresh_tokens_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON refresh_tokens
        FOR EACH STATEMENT EXECUTE FUNCTION o16n_count_change('auth');
    CREATE TRIGGER services_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON services
        FOR EACH STATEMENT EXECUTE FUNCTION o16n_count_change('services');
    CREATE TRIGGER compute_nodes_changed
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON compute_nodes
        FOR EACH STATEMENT EXECUTE FUNCTION o16n_count_change('nodes');
    """,
}
