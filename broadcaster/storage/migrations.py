"""The numbered schema migrations. ``PRAGMA user_version`` holds how many are
applied; each runs in its own transaction (broadcaster.storage.db.migrate).

Append only: a migration that has shipped is never edited, because databases
in the field already ran it. Statements are split with
``sqlite3.complete_statement`` so a ``;`` inside a string or a trigger body is
part of its statement.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the base schema.
    """
    CREATE TABLE zones (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        parent TEXT REFERENCES zones(id) ON DELETE RESTRICT
    );
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        public INTEGER NOT NULL DEFAULT 1,
        multicast_group TEXT,
        multicast_port INTEGER,
        multicast_ttl INTEGER,
        loop_path TEXT,
        loop_gain_db REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE loudspeakers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        channel TEXT NOT NULL REFERENCES channels(id) ON DELETE RESTRICT,
        key_sealed BLOB NOT NULL,
        volume INTEGER NOT NULL DEFAULT 80,
        created_at REAL NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        password_hash TEXT,
        created_at REAL NOT NULL
    );
    CREATE TABLE user_zones (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, zone)
    );
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE media (
        id TEXT PRIMARY KEY,
        zone TEXT NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
        title TEXT NOT NULL,
        filename TEXT NOT NULL,
        path TEXT NOT NULL,
        duration_s REAL NOT NULL,
        loudness_lufs REAL,
        original_lufs REAL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        uploaded_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE broadcast_log (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        zone TEXT NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        started_by TEXT NOT NULL,
        outcome TEXT
    );
    CREATE INDEX broadcast_log_time ON broadcast_log (started_at);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        zone TEXT,
        remote TEXT,
        detail TEXT
    );
    """,
    # 2: loudspeaker online sessions (the source of availability figures), a
    #    server heartbeat to close what a crash left open, notes on log entries.
    """
    CREATE TABLE speaker_sessions (
        id INTEGER PRIMARY KEY,
        loudspeaker TEXT NOT NULL,
        zone TEXT NOT NULL,
        channel TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE INDEX speaker_sessions_time ON speaker_sessions (started_at);
    ALTER TABLE broadcast_log ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
    """,
    # 3: scheduled programmes (playlists of media on target zones).
    """
    CREATE TABLE programmes (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        zones TEXT NOT NULL,
        media TEXT NOT NULL,
        start_local TEXT NOT NULL,
        duration_s REAL NOT NULL,
        recurrence TEXT NOT NULL,
        weekdays TEXT NOT NULL DEFAULT '[]',
        until TEXT,
        priority INTEGER NOT NULL DEFAULT 20,
        on_restart TEXT NOT NULL DEFAULT 'resume',
        on_preempt TEXT NOT NULL DEFAULT 'pause',
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 4: indexes for the paged logs (newest first), per-zone lists, and closing open sessions.
    """
    CREATE INDEX audit_log_time ON audit_log (at);
    CREATE INDEX loudspeakers_zone ON loudspeakers (zone);
    CREATE INDEX speaker_sessions_open ON speaker_sessions (loudspeaker) WHERE ended_at IS NULL;
    """,
    # 5: a broadcast-log row's id made by the server before it is written (``uid``), so
    #    a play opened while the disk is full is queued and closed by that id
    #    (storage/logs.py). NULL for the rows written before; NULLs never collide.
    """
    ALTER TABLE broadcast_log ADD COLUMN uid TEXT;
    CREATE UNIQUE INDEX broadcast_log_uid ON broadcast_log (uid);
    """,
    # 6: tokens get a public id (to list and revoke them by), an expiry and the time last used.
    #    Tokens made before expire 90 days after the upgrade, not at once.
    """
    ALTER TABLE tokens ADD COLUMN id TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at REAL;
    ALTER TABLE tokens ADD COLUMN last_used_at REAL;
    UPDATE tokens SET id = 'tok_' || lower(hex(randomblob(6))),
                      expires_at = CAST(strftime('%s', 'now') AS REAL) + 90 * 86400;
    CREATE UNIQUE INDEX tokens_id ON tokens (id);
    CREATE INDEX tokens_user ON tokens (user_id);
    """,
    # 7: alerts on air, so a crash does not leave loudspeakers alerted (storage/alerts.py).
    """
    CREATE TABLE alerts_on_air (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        expires_at REAL,
        spec TEXT NOT NULL
    );
    """,
    # 8: the relay library (national and provincial radio by URL, per zone) and programmes that
    #    relay one of them instead of playing media.
    """
    CREATE TABLE relays (
        id TEXT PRIMARY KEY,
        zone TEXT NOT NULL,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX relays_zone ON relays (zone);
    ALTER TABLE programmes ADD COLUMN relay TEXT;
    """,
    # 9: bulletins (written, approved, scheduled, played: control/bulletins.py, docs/bulletins.md), their
    #    plays per slot and channel (what the province link reports up), extra permissions per user
    #    (bulletin.create, bulletin.approve beside the role's own), where a broadcast came from
    #    (local, province, central, relay: the yearly report's hours by source), and the outcome of
    #    every alert (loudspeakers commanded and acknowledged: the yearly report's share).
    """
    ALTER TABLE users ADD COLUMN permissions TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE broadcast_log ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
    CREATE TABLE bulletins (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        media TEXT,
        speech TEXT,
        category TEXT NOT NULL DEFAULT '',
        class TEXT NOT NULL CHECK (class IN ('thong-thuong', 'uu-tien', 'khan-cap')),
        language TEXT NOT NULL DEFAULT 'vi',
        valid_from REAL,
        valid_until REAL,
        zones TEXT NOT NULL,
        plan TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'province', 'central')),
        origin TEXT,
        origin_id TEXT,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL DEFAULT 1,
        approved_content TEXT,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_by TEXT,
        updated_at REAL,
        submitted_by TEXT,
        submitted_at REAL,
        approved_by TEXT,
        approved_at REAL,
        next_at REAL
    );
    CREATE INDEX bulletins_state ON bulletins (state);
    CREATE UNIQUE INDEX bulletins_origin ON bulletins (origin, origin_id) WHERE origin_id IS NOT NULL;
    CREATE TABLE bulletin_plays (
        id INTEGER PRIMARY KEY,
        bulletin TEXT NOT NULL,
        slot REAL NOT NULL,
        channel TEXT NOT NULL,
        zone TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        outcome TEXT,
        online INTEGER,
        acknowledged INTEGER,
        UNIQUE (bulletin, slot, channel)
    );
    CREATE INDEX bulletin_plays_time ON bulletin_plays (started_at);
    CREATE TABLE alert_results (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        zones TEXT NOT NULL,
        priority INTEGER NOT NULL,
        bulletin TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        commanded INTEGER NOT NULL DEFAULT 0,
        acknowledged INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alert_results_time ON alert_results (started_at);
    """,
    # 10: an alert's loudspeakers commanded and acknowledged per loudspeaker zone
    #    ({"hamlet-a": [commanded, acknowledged]}), so the yearly report gives each commune its own
    #    acknowledgement share of an alert that covered many (control/alerts.py writes it).
    """
    ALTER TABLE alert_results ADD COLUMN by_zone TEXT NOT NULL DEFAULT '{}';
    """,
    # 11: the province link (broadcaster/link/, storage/link.py, docs/source-system.md). As a commune:
    #     the bulletins imported from the upstream by its id and version, the recordings fetched with
    #     them (our media item for each upstream one), and the reporter's cursors (what
    #     the upstream has acknowledged). As the province: the state of each downstream server, and what
    #     they reported (plays, loudspeaker inventory, daily figures). Loudspeakers get a position for the
    #     inventory. Received nonces are not stored: they live in memory for the replay window.
    """
    CREATE TABLE link_imports (
        origin TEXT NOT NULL,
        upstream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        bulletin TEXT,
        imported_at REAL NOT NULL,
        PRIMARY KEY (origin, upstream_id)
    );
    CREATE TABLE link_media (
        origin TEXT NOT NULL,
        upstream_media TEXT NOT NULL,
        media TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (origin, upstream_media)
    );
    CREATE TABLE link_cursors (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE link_downstreams (
        id TEXT PRIMARY KEY,
        last_pull_at REAL,
        last_report_at REAL,
        last_push_at REAL,
        push_digest TEXT,
        last_error TEXT,
        last_error_at REAL,
        inventory_at REAL
    );
    CREATE TABLE link_plays (
        downstream TEXT NOT NULL,
        play_id INTEGER NOT NULL,
        bulletin TEXT NOT NULL,
        channel TEXT NOT NULL,
        area TEXT NOT NULL DEFAULT '',
        slot REAL,
        started_at REAL NOT NULL,
        ended_at REAL,
        duration_s REAL,
        outcome TEXT,
        online INTEGER,
        acknowledged INTEGER,
        received_at REAL NOT NULL,
        PRIMARY KEY (downstream, play_id)
    );
    CREATE INDEX link_plays_bulletin ON link_plays (bulletin);
    CREATE TABLE link_loudspeakers (
        downstream TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        area TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL DEFAULT '',
        lat REAL,
        lon REAL,
        status TEXT NOT NULL,
        last_seen REAL,
        reported_at REAL NOT NULL,
        PRIMARY KEY (downstream, id)
    );
    CREATE TABLE link_daily (
        downstream TEXT NOT NULL,
        day TEXT NOT NULL,
        channel TEXT NOT NULL,
        area TEXT NOT NULL DEFAULT '',
        hours_on_air REAL NOT NULL,
        loudspeakers INTEGER NOT NULL,
        online_share REAL,
        reported_at REAL NOT NULL,
        PRIMARY KEY (downstream, day, channel)
    );
    ALTER TABLE loudspeakers ADD COLUMN lat REAL;
    ALTER TABLE loudspeakers ADD COLUMN lon REAL;
    """,
    # 12: a password someone else chose (the demo's, an admin's reset) must be changed at the next sign-in;
    # a console sign-in is a token kept in a cookie (tokens.session), bounded per user apart from API tokens
    """
    ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tokens ADD COLUMN session INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
