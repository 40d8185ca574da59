//! Per-dialect migrations. The tables and columns are the same on every database (a contract:
//! users query them directly); only the type names and index syntax differ.

use super::Dialect;

/// Migrations in order; `schema_version` records how many have run.
pub fn migrations(dialect: Dialect) -> &'static [&'static [&'static str]] {
    match dialect {
        Dialect::Sqlite => &[
            &[
                "CREATE TABLE IF NOT EXISTS sensors (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
                last_value REAL, last_seen INTEGER,
                UNIQUE (owner, place, category))",
                "CREATE TABLE IF NOT EXISTS readings (
                sensor_id INTEGER NOT NULL REFERENCES sensors (id),
                ts INTEGER NOT NULL, value REAL NOT NULL)",
                "CREATE INDEX IF NOT EXISTS readings_sensor_ts ON readings (sensor_id, ts)",
                "CREATE TABLE IF NOT EXISTS rejects (
                id INTEGER PRIMARY KEY AUTOINCREMENT, received_at INTEGER NOT NULL,
                client_id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS rejects_received_at ON rejects (received_at)",
            ],
            &[ROLLUP_SQLITE, BACKFILL],
            USERS_SQLITE,
            TOKENS_SQLITE,
            KEY_LENGTH_SQLITE,
            COMMITS,
            BROKER_STATE_SQLITE,
            LIFECYCLE_SQLITE,
            ALERTS_SQLITE,
            CLUSTER_SQLITE,
            MQTT5_SQLITE,
            STAGED_READINGS_SQLITE,
            &[],
            &[],
            HOURS_FOLDED_SQLITE,
            &[],
            &[],
            &[],
        ],
        Dialect::Postgres => &[
            &[
                "CREATE TABLE IF NOT EXISTS sensors (
                id BIGSERIAL PRIMARY KEY,
                owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
                last_value DOUBLE PRECISION, last_seen BIGINT,
                UNIQUE (owner, place, category))",
                "CREATE TABLE IF NOT EXISTS readings (
                sensor_id BIGINT NOT NULL REFERENCES sensors (id),
                ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL)",
                "CREATE INDEX IF NOT EXISTS readings_sensor_ts ON readings (sensor_id, ts)",
                "CREATE TABLE IF NOT EXISTS rejects (
                id BIGSERIAL PRIMARY KEY, received_at BIGINT NOT NULL,
                client_id TEXT NOT NULL, topic TEXT NOT NULL, payload BYTEA NOT NULL, reason TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS rejects_received_at ON rejects (received_at)",
            ],
            &[ROLLUP_POSTGRES, BACKFILL],
            USERS_POSTGRES,
            TOKENS_POSTGRES,
            KEY_LENGTH_POSTGRES,
            COMMITS,
            BROKER_STATE_POSTGRES,
            LIFECYCLE_POSTGRES,
            ALERTS_POSTGRES,
            CLUSTER_POSTGRES,
            MQTT5_POSTGRES,
            &[],
            READINGS_WITHOUT_FOREIGN_KEY_POSTGRES,
            ROOM_FOR_UPDATES_POSTGRES,
            HOURS_FOLDED_POSTGRES,
            &[],
            &[],
            &[],
        ],
        // Unique keys need bounded lengths in MySQL/MariaDB; indexes are declared inline.
        Dialect::MySql => &[
            &[
                "CREATE TABLE IF NOT EXISTS sensors (
                id BIGINT AUTO_INCREMENT PRIMARY KEY,
                owner VARCHAR(191) NOT NULL, place VARCHAR(191) NOT NULL, category VARCHAR(191) NOT NULL,
                last_value DOUBLE, last_seen BIGINT,
                UNIQUE KEY sensors_key (owner, place, category)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                "CREATE TABLE IF NOT EXISTS readings (
                sensor_id BIGINT NOT NULL, ts BIGINT NOT NULL, value DOUBLE NOT NULL,
                INDEX readings_sensor_ts (sensor_id, ts),
                FOREIGN KEY (sensor_id) REFERENCES sensors (id)) ENGINE=InnoDB",
                "CREATE TABLE IF NOT EXISTS rejects (
                id BIGINT AUTO_INCREMENT PRIMARY KEY, received_at BIGINT NOT NULL,
                client_id TEXT NOT NULL, topic TEXT NOT NULL, payload VARBINARY(1024) NOT NULL, reason TEXT NOT NULL,
                INDEX rejects_received_at (received_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            ],
            &[ROLLUP_MYSQL, BACKFILL],
            USERS_MYSQL,
            TOKENS_MYSQL,
            KEY_LENGTH_MYSQL,
            COMMITS,
            BROKER_STATE_MYSQL,
            LIFECYCLE_MYSQL,
            ALERTS_MYSQL,
            CLUSTER_MYSQL,
            MQTT5_MYSQL,
            &[],
            &[],
            &[],
            HOURS_FOLDED_MYSQL,
            MINUTES_FOLDED_MYSQL,
            STAGED_READINGS_MYSQL,
            STAGED_FOLDED_MYSQL,
        ],
    }
}

// Migration 2: per-minute rollups (min, max, sum, count) of each sensor, kept by the ingest
// writer in the same transaction as the readings. Charts over long ranges read these: a week
// is 10,080 rows per sensor instead of 604,800 at one reading per second.
const ROLLUP_SQLITE: &str = "CREATE TABLE IF NOT EXISTS readings_1m (
    sensor_id INTEGER NOT NULL REFERENCES sensors (id), minute INTEGER NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, minute))";
const ROLLUP_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS readings_1m (
    sensor_id BIGINT NOT NULL REFERENCES sensors (id), minute BIGINT NOT NULL,
    min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL, sum DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL,
    PRIMARY KEY (sensor_id, minute))";
const ROLLUP_MYSQL: &str = "CREATE TABLE IF NOT EXISTS readings_1m (
    sensor_id BIGINT NOT NULL, minute BIGINT NOT NULL,
    min DOUBLE NOT NULL, max DOUBLE NOT NULL, sum DOUBLE NOT NULL, count BIGINT NOT NULL,
    PRIMARY KEY (sensor_id, minute),
    FOREIGN KEY (sensor_id) REFERENCES sensors (id)) ENGINE=InnoDB";
/// `minute` is the start of the minute in epoch ms (readings' `ts` are never negative).
const BACKFILL: &str = "INSERT INTO readings_1m (sensor_id, minute, min, max, sum, count)
    SELECT sensor_id, ts - (ts % 60000), MIN(value), MAX(value), SUM(value), COUNT(*)
    FROM readings GROUP BY sensor_id, ts - (ts % 60000)";

// Migration 3: user accounts (Argon2id hashes, never plain passwords) and the extra topic
// filters a user may publish or subscribe to besides `iot/{name}/#`.
const USERS_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL, created_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS user_grants (
        user_id INTEGER NOT NULL REFERENCES users (id), filter TEXT NOT NULL,
        publish INTEGER NOT NULL, subscribe INTEGER NOT NULL, PRIMARY KEY (user_id, filter))",
];
const USERS_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
        is_admin BOOLEAN NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS user_grants (
        user_id BIGINT NOT NULL REFERENCES users (id), filter TEXT NOT NULL,
        publish BOOLEAN NOT NULL, subscribe BOOLEAN NOT NULL, PRIMARY KEY (user_id, filter))",
];
const USERS_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(191) NOT NULL UNIQUE, password_hash VARCHAR(255) NOT NULL,
        is_admin BOOLEAN NOT NULL, created_at BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS user_grants (
        user_id BIGINT NOT NULL, filter VARCHAR(191) NOT NULL,
        publish BOOLEAN NOT NULL, subscribe BOOLEAN NOT NULL, PRIMARY KEY (user_id, filter),
        FOREIGN KEY (user_id) REFERENCES users (id)) ENGINE=InnoDB",
];

// Migration 4: login sessions and API tokens. Only a hash of each token is stored; `kind` is
// `session` (dashboard cookie), `console` (the dashboard's MQTT console password) or `api`.
const TOKENS_SQLITE: &[&str] = &["CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL, expires_at INTEGER)"];
const TOKENS_POSTGRES: &[&str] = &["CREATE TABLE IF NOT EXISTS tokens (
    id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL, expires_at BIGINT)"];
const TOKENS_MYSQL: &[&str] = &["CREATE TABLE IF NOT EXISTS tokens (
    id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL,
    kind VARCHAR(16) NOT NULL, name VARCHAR(191) NOT NULL, token_hash VARCHAR(64) NOT NULL UNIQUE,
    created_at BIGINT NOT NULL, expires_at BIGINT,
    FOREIGN KEY (user_id) REFERENCES users (id)) ENGINE=InnoDB"];

// Migration 5: each sensor key level is at most 191 characters on every database
// (`model::MAX_LEVEL_CHARS`; ingest refuses longer ones before they reach the writer, this is
// the database's own guard). MariaDB/MySQL had it already from `VARCHAR(191)`. Existing rows
// are not re-checked.
const KEY_LENGTH_SQLITE: &[&str] = &["CREATE TRIGGER IF NOT EXISTS sensors_key_length BEFORE INSERT ON sensors
    WHEN length(NEW.owner) > 191 OR length(NEW.place) > 191 OR length(NEW.category) > 191
    BEGIN SELECT RAISE(ABORT, 'sensor key level longer than 191 characters'); END"];
const KEY_LENGTH_POSTGRES: &[&str] = &["ALTER TABLE sensors ADD CONSTRAINT sensors_key_length
    CHECK (char_length(owner) <= 191 AND char_length(place) <= 191 AND char_length(category) <= 191) NOT VALID"];
const KEY_LENGTH_MYSQL: &[&str] = &[];

// Migration 6: the token of each committed ingest batch, written in the batch's transaction, so
// that a batch retried after a lost COMMIT answer (the connection broke after the server had
// committed) is not stored twice. Rows older than an hour are deleted by the writer.
const COMMITS: &[&str] = &["CREATE TABLE IF NOT EXISTS ingest_commits (token BIGINT NOT NULL PRIMARY KEY, committed_at BIGINT NOT NULL)"];

// Migration 7: the broker's state that survives restarts (`store::broker_state`): retained
// messages, persistent sessions (clean session 0) with their subscriptions and queued QoS 1/2
// messages (`seq` numbers them in queue order), incoming QoS 2 ids not yet released, and the
// wills of connected clients. Topics, client ids and filters compare byte for byte (MQTT is
// case-sensitive): MariaDB/MySQL use a binary collation, and bounded lengths for its keys.
const BROKER_STATE_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS retained (topic TEXT NOT NULL PRIMARY KEY, payload BLOB NOT NULL, qos SMALLINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mqtt_sessions (client_id TEXT NOT NULL PRIMARY KEY, username TEXT, offline_since BIGINT)",
    "CREATE TABLE IF NOT EXISTS mqtt_subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL, qos SMALLINT NOT NULL,
        PRIMARY KEY (client_id, filter))",
    "CREATE TABLE IF NOT EXISTS mqtt_queue (seq BIGINT NOT NULL PRIMARY KEY, client_id TEXT NOT NULL, topic TEXT NOT NULL,
        payload BLOB NOT NULL, qos SMALLINT NOT NULL, packet_id INTEGER, released SMALLINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS mqtt_queue_client ON mqtt_queue (client_id)",
    "CREATE TABLE IF NOT EXISTS mqtt_inbound_qos2 (client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id))",
    "CREATE TABLE IF NOT EXISTS mqtt_wills (client_id TEXT NOT NULL PRIMARY KEY, username TEXT, topic TEXT NOT NULL,
        payload BLOB NOT NULL, qos SMALLINT NOT NULL, retain SMALLINT NOT NULL)",
];
const BROKER_STATE_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS retained (topic TEXT NOT NULL PRIMARY KEY, payload BYTEA NOT NULL, qos SMALLINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mqtt_sessions (client_id TEXT NOT NULL PRIMARY KEY, username TEXT, offline_since BIGINT)",
    "CREATE TABLE IF NOT EXISTS mqtt_subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL, qos SMALLINT NOT NULL,
        PRIMARY KEY (client_id, filter))",
    "CREATE TABLE IF NOT EXISTS mqtt_queue (seq BIGINT NOT NULL PRIMARY KEY, client_id TEXT NOT NULL, topic TEXT NOT NULL,
        payload BYTEA NOT NULL, qos SMALLINT NOT NULL, packet_id INTEGER, released SMALLINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS mqtt_queue_client ON mqtt_queue (client_id)",
    "CREATE TABLE IF NOT EXISTS mqtt_inbound_qos2 (client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id))",
    "CREATE TABLE IF NOT EXISTS mqtt_wills (client_id TEXT NOT NULL PRIMARY KEY, username TEXT, topic TEXT NOT NULL,
        payload BYTEA NOT NULL, qos SMALLINT NOT NULL, retain SMALLINT NOT NULL)",
];
const BROKER_STATE_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS retained (topic VARCHAR(768) NOT NULL PRIMARY KEY, payload LONGBLOB NOT NULL, qos SMALLINT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mqtt_sessions (client_id VARCHAR(191) NOT NULL PRIMARY KEY, username VARCHAR(191), offline_since BIGINT)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mqtt_subscriptions (client_id VARCHAR(191) NOT NULL, filter VARCHAR(500) NOT NULL, qos SMALLINT NOT NULL,
        PRIMARY KEY (client_id, filter)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mqtt_queue (seq BIGINT NOT NULL PRIMARY KEY, client_id VARCHAR(191) NOT NULL, topic TEXT NOT NULL,
        payload LONGBLOB NOT NULL, qos SMALLINT NOT NULL, packet_id INTEGER, released SMALLINT NOT NULL,
        INDEX mqtt_queue_client (client_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mqtt_inbound_qos2 (client_id VARCHAR(191) NOT NULL, packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS mqtt_wills (client_id VARCHAR(191) NOT NULL PRIMARY KEY, username VARCHAR(191), topic TEXT NOT NULL,
        payload LONGBLOB NOT NULL, qos SMALLINT NOT NULL, retain SMALLINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];

// Migration 8: the data lifecycle. A sensor's own settings: its name on the dashboard, its unit,
// whether the dashboard hides it, and its own retention of raw readings (`retention_ms`: NULL
// follows the rules, 0 keeps them forever). Hourly rollups (`hour` is the start of the hour in
// epoch ms), kept by the ingest writer like the per-minute ones and kept longer: charts of
// ranges whose raw readings and minutes are gone are drawn from them. Filled from the
// per-minute rollups at once.
const HOURLY_BACKFILL: &str = "INSERT INTO readings_1h (sensor_id, hour, min, max, sum, count)
    SELECT sensor_id, minute - (minute % 3600000), MIN(min), MAX(max), SUM(sum), SUM(count)
    FROM readings_1m GROUP BY sensor_id, minute - (minute % 3600000)";
const LIFECYCLE_SQLITE: &[&str] = &[
    "ALTER TABLE sensors ADD COLUMN display_name TEXT",
    "ALTER TABLE sensors ADD COLUMN unit TEXT",
    "ALTER TABLE sensors ADD COLUMN hidden SMALLINT NOT NULL DEFAULT 0",
    "ALTER TABLE sensors ADD COLUMN retention_ms BIGINT",
    "CREATE TABLE IF NOT EXISTS readings_1h (
        sensor_id INTEGER NOT NULL REFERENCES sensors (id), hour INTEGER NOT NULL,
        min REAL NOT NULL, max REAL NOT NULL, sum REAL NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (sensor_id, hour))",
    HOURLY_BACKFILL,
];
const LIFECYCLE_POSTGRES: &[&str] = &[
    "ALTER TABLE sensors ADD COLUMN display_name TEXT",
    "ALTER TABLE sensors ADD COLUMN unit TEXT",
    "ALTER TABLE sensors ADD COLUMN hidden SMALLINT NOT NULL DEFAULT 0",
    "ALTER TABLE sensors ADD COLUMN retention_ms BIGINT",
    "CREATE TABLE IF NOT EXISTS readings_1h (
        sensor_id BIGINT NOT NULL REFERENCES sensors (id), hour BIGINT NOT NULL,
        min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL, sum DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL,
        PRIMARY KEY (sensor_id, hour))",
    HOURLY_BACKFILL,
];
const LIFECYCLE_MYSQL: &[&str] = &[
    "ALTER TABLE sensors ADD COLUMN display_name VARCHAR(191), ADD COLUMN unit VARCHAR(32),
        ADD COLUMN hidden SMALLINT NOT NULL DEFAULT 0, ADD COLUMN retention_ms BIGINT",
    "CREATE TABLE IF NOT EXISTS readings_1h (
        sensor_id BIGINT NOT NULL, hour BIGINT NOT NULL,
        min DOUBLE NOT NULL, max DOUBLE NOT NULL, sum DOUBLE NOT NULL, count BIGINT NOT NULL,
        PRIMARY KEY (sensor_id, hour),
        FOREIGN KEY (sensor_id) REFERENCES sensors (id)) ENGINE=InnoDB",
    HOURLY_BACKFILL,
];

// Migration 9: alerts (`store::alerts`). Rules, owned by a user and unique per owner and name;
// the state of a rule for a sensor while it is pending or firing (a fine one has no row), keyed
// by the sensor's levels rather than its id, so history and states need no foreign key to a
// sensor that may be deleted; and the history of state changes. MariaDB/MySQL: the sensors
// table's character set and collation, so a state's key compares like its sensor's (and rule
// names compare without case there: `Hot` and `hot` are one name on MariaDB).
const ALERTS_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alert_rules (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, name TEXT NOT NULL,
        filter TEXT NOT NULL, kind TEXT NOT NULL, threshold REAL, clear_level REAL, hold_ms BIGINT NOT NULL, stale_ms BIGINT,
        severity TEXT NOT NULL, webhook TEXT, from_config SMALLINT NOT NULL, silenced_until BIGINT, UNIQUE (owner, name))",
    "CREATE TABLE IF NOT EXISTS alert_states (rule_id BIGINT NOT NULL, owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
        status TEXT NOT NULL, since BIGINT NOT NULL, value REAL, acked_by TEXT, PRIMARY KEY (rule_id, owner, place, category))",
    "CREATE TABLE IF NOT EXISTS alert_events (id INTEGER PRIMARY KEY AUTOINCREMENT, at BIGINT NOT NULL, rule_id BIGINT NOT NULL,
        rule_owner TEXT NOT NULL, rule_name TEXT NOT NULL, owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
        state TEXT NOT NULL, severity TEXT NOT NULL, value REAL, by_user TEXT)",
    "CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at)",
    "CREATE INDEX IF NOT EXISTS alert_events_rule_owner ON alert_events (rule_owner, id)",
    "CREATE INDEX IF NOT EXISTS alert_events_owner ON alert_events (owner, id)",
];
const ALERTS_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alert_rules (id BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL,
        filter TEXT NOT NULL, kind TEXT NOT NULL, threshold DOUBLE PRECISION, clear_level DOUBLE PRECISION, hold_ms BIGINT NOT NULL,
        stale_ms BIGINT, severity TEXT NOT NULL, webhook TEXT, from_config SMALLINT NOT NULL, silenced_until BIGINT, UNIQUE (owner, name))",
    "CREATE TABLE IF NOT EXISTS alert_states (rule_id BIGINT NOT NULL, owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
        status TEXT NOT NULL, since BIGINT NOT NULL, value DOUBLE PRECISION, acked_by TEXT, PRIMARY KEY (rule_id, owner, place, category))",
    "CREATE TABLE IF NOT EXISTS alert_events (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, rule_id BIGINT NOT NULL,
        rule_owner TEXT NOT NULL, rule_name TEXT NOT NULL, owner TEXT NOT NULL, place TEXT NOT NULL, category TEXT NOT NULL,
        state TEXT NOT NULL, severity TEXT NOT NULL, value DOUBLE PRECISION, by_user TEXT)",
    "CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at)",
    "CREATE INDEX IF NOT EXISTS alert_events_rule_owner ON alert_events (rule_owner, id)",
    "CREATE INDEX IF NOT EXISTS alert_events_owner ON alert_events (owner, id)",
];
const ALERTS_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alert_rules (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(191) NOT NULL, name VARCHAR(64) NOT NULL,
        filter VARCHAR(500) NOT NULL, kind VARCHAR(16) NOT NULL, threshold DOUBLE, clear_level DOUBLE, hold_ms BIGINT NOT NULL,
        stale_ms BIGINT, severity VARCHAR(16) NOT NULL, webhook VARCHAR(2000), from_config SMALLINT NOT NULL, silenced_until BIGINT, UNIQUE KEY alert_rules_key (owner, name))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS alert_states (rule_id BIGINT NOT NULL, owner VARCHAR(191) NOT NULL, place VARCHAR(191) NOT NULL,
        category VARCHAR(191) NOT NULL, status VARCHAR(16) NOT NULL, since BIGINT NOT NULL, value DOUBLE, acked_by VARCHAR(191),
        PRIMARY KEY (rule_id, owner, place, category)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS alert_events (id BIGINT AUTO_INCREMENT PRIMARY KEY, at BIGINT NOT NULL, rule_id BIGINT NOT NULL,
        rule_owner VARCHAR(191) NOT NULL, rule_name VARCHAR(64) NOT NULL, owner VARCHAR(191) NOT NULL, place VARCHAR(191) NOT NULL,
        category VARCHAR(191) NOT NULL, state VARCHAR(16) NOT NULL, severity VARCHAR(16) NOT NULL, value DOUBLE, by_user VARCHAR(191),
        INDEX alert_events_at (at), INDEX alert_events_rule_owner (rule_owner, id), INDEX alert_events_owner (owner, id))
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

// Migration 10: several nodes on one database (`store::cluster`). `upstream_deliveries`: per
// node, the upstream broker's packet id of each message committed from it, with a hash of its
// topic and payload and a sequence number (written in the batch's transaction), so that a
// message the upstream broker sends again after a crash, before it had heard the
// acknowledgement, is recognised and not stored twice. At most 65,536 rows per node. `leases`:
// which node runs a job that must run once (the purge, the alert engine, Home Assistant
// discovery), until when (epoch ms).
const CLUSTER_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS upstream_deliveries (node TEXT NOT NULL, packet_id INTEGER NOT NULL, hash BIGINT NOT NULL,
        seq BIGINT NOT NULL, PRIMARY KEY (node, packet_id))",
    "CREATE TABLE IF NOT EXISTS leases (name TEXT NOT NULL PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)",
];
const CLUSTER_POSTGRES: &[&str] = CLUSTER_SQLITE;
const CLUSTER_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS upstream_deliveries (node VARCHAR(191) NOT NULL, packet_id INTEGER NOT NULL, hash BIGINT NOT NULL,
        seq BIGINT NOT NULL, PRIMARY KEY (node, packet_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS leases (name VARCHAR(191) NOT NULL PRIMARY KEY, holder VARCHAR(191) NOT NULL, expires_at BIGINT NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

// Migration 11: what MQTT 5.0 adds to the broker's state. `properties`: a message's 5.0
// properties as the broker keeps them (its expiry, then the properties a PUBLISH carries; NULL:
// none); `expiry_secs`: a session's own expiry interval (NULL: the server's); `options`: a
// subscription's 5.0 options (bit 0 no local, bit 1 retain as published, its identifier
// from bit 8).
const MQTT5_SQLITE: &[&str] = &[
    "ALTER TABLE retained ADD COLUMN properties BLOB",
    "ALTER TABLE mqtt_queue ADD COLUMN properties BLOB",
    "ALTER TABLE mqtt_wills ADD COLUMN properties BLOB",
    "ALTER TABLE mqtt_sessions ADD COLUMN expiry_secs BIGINT",
    "ALTER TABLE mqtt_subscriptions ADD COLUMN options BIGINT NOT NULL DEFAULT 0",
];
const MQTT5_POSTGRES: &[&str] = &[
    "ALTER TABLE retained ADD COLUMN properties BYTEA",
    "ALTER TABLE mqtt_queue ADD COLUMN properties BYTEA",
    "ALTER TABLE mqtt_wills ADD COLUMN properties BYTEA",
    "ALTER TABLE mqtt_sessions ADD COLUMN expiry_secs BIGINT",
    "ALTER TABLE mqtt_subscriptions ADD COLUMN options BIGINT NOT NULL DEFAULT 0",
];
const MQTT5_MYSQL: &[&str] = &[
    "ALTER TABLE retained ADD COLUMN properties LONGBLOB",
    "ALTER TABLE mqtt_queue ADD COLUMN properties LONGBLOB",
    "ALTER TABLE mqtt_wills ADD COLUMN properties LONGBLOB",
    "ALTER TABLE mqtt_sessions ADD COLUMN expiry_secs BIGINT",
    "ALTER TABLE mqtt_subscriptions ADD COLUMN options BIGINT NOT NULL DEFAULT 0",
];

// Migration 12 (SQLite only; a version without statements elsewhere): the readings of a SQLite
// file are kept in two tables, and `readings` becomes the view of both, so what reads it (the
// API, exports, people's own SQL) sees every reading as before. The ingest writer appends a
// fleet's batches (a reading or two per sensor) to `readings_staged`, which has no index, and
// about once a second moves what it holds into `readings_indexed` in (sensor, time) order
// (`sqlite_writer`). Written straight into the indexed table, each reading of a thousand
// sensors dirtied a page of the (sensor_id, ts) index of its own, and every commit wrote about
// a page per reading to the log; merged in order, a page takes a second's readings at once.
// Whatever deletes readings deletes from both tables (`Series::tables`).
pub(super) const SQLITE_STAGED_READINGS: &str = "readings_staged";
pub(super) const SQLITE_INDEXED_READINGS: &str = "readings_indexed";
const STAGED_READINGS_SQLITE: &[&str] = &[
    "ALTER TABLE readings RENAME TO readings_indexed",
    "CREATE TABLE IF NOT EXISTS readings_staged (
        sensor_id INTEGER NOT NULL REFERENCES sensors (id),
        ts INTEGER NOT NULL, value REAL NOT NULL)",
    "CREATE VIEW IF NOT EXISTS readings AS
        SELECT sensor_id, ts, value FROM readings_indexed UNION ALL SELECT sensor_id, ts, value FROM readings_staged",
];

// Migration 13 (PostgreSQL only): `readings` loses its foreign key to `sensors`. PostgreSQL
// checked it with a query of its own for every reading inserted, under a lock on the sensor's
// row: a quarter of what the server spent on a fleet's batch (1,000 sensors with a reading
// each: 16.7 → 12.3 ms per batch in psql; `write-bench` 45.8k → 57.4k readings/s). The
// batch's update of the sensors' latest values now updates the row of every sensor it names,
// and fails the batch when one is missing (`store::batch`): the same guarantee, a sensor
// deleted meanwhile is created anew by the batch's second attempt and no reading is left
// without its sensor, checked once per sensor instead of once per reading. The rollups keep
// their foreign keys (checked only when a sensor's minute or hour begins).
const READINGS_WITHOUT_FOREIGN_KEY_POSTGRES: &[&str] = &["ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_sensor_id_fkey"];

// Migration 14 (PostgreSQL only): pages of the rollups and of `sensors` are filled to 70 %, so
// that an update (every reading updates its sensor's minute, hour and latest value) finds room
// for the row's new version on the same page: PostgreSQL then writes no new index entries for
// it (a "HOT" update). Full pages sent about half of the per-minute rollup's updates to another
// page, and to its index. A fleet's batch of 1,000 sensors measured 12.9 → 10.8 ms in psql.
// Existing tables take the setting for the pages they fill from now on.
const ROOM_FOR_UPDATES_POSTGRES: &[&str] = &[
    "ALTER TABLE readings_1m SET (fillfactor = 70)",
    "ALTER TABLE readings_1h SET (fillfactor = 70)",
    "ALTER TABLE sensors SET (fillfactor = 70)",
];

// Migration 15: the hourly rollups are folded from the per-minute ones once a minute
// (`store::fold`), instead of being upserted by every batch: a fleet's reading cost four row
// writes (the reading, its minute, its hour, its sensor's latest value), now three. One row,
// `folded_before`, says up to which minute (exclusive) `readings_1h` holds the minutes; a
// batch upserts the hours of its readings older than that (late ones) itself, and reads of
// hourly rollups add the minutes from it on. It starts after every minute already stored (their
// hours were upserted by their batches, and are never folded again), and at the current minute
// at the earliest, so that an import of old readings into a new database writes their hours. The index on
// `minute` finds the minutes to fold without reading the whole table.
const HOURS_FOLDED_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rollup_fold (id INTEGER NOT NULL PRIMARY KEY, folded_before INTEGER NOT NULL)",
    "INSERT INTO rollup_fold (id, folded_before) SELECT 1,
        MAX(COALESCE((SELECT MAX(minute) FROM readings_1m) + 60000, 0), CAST(strftime('%s', 'now') AS INTEGER) * 1000 / 60000 * 60000)",
    "CREATE INDEX IF NOT EXISTS readings_1m_minute ON readings_1m (minute)",
];
const HOURS_FOLDED_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rollup_fold (id INTEGER NOT NULL PRIMARY KEY, folded_before BIGINT NOT NULL)",
    "INSERT INTO rollup_fold (id, folded_before) SELECT 1,
        GREATEST((SELECT MAX(minute) FROM readings_1m) + 60000, CAST(FLOOR(EXTRACT(EPOCH FROM now())) AS BIGINT) * 1000 / 60000 * 60000)",
    "CREATE INDEX IF NOT EXISTS readings_1m_minute ON readings_1m (minute)",
];
const HOURS_FOLDED_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rollup_fold (id INTEGER NOT NULL PRIMARY KEY, folded_before BIGINT NOT NULL) ENGINE=InnoDB",
    // IGNORE: the index after it commits this row on its own (MariaDB commits each DDL
    // statement), and a start stopped during that index runs the migration again.
    "INSERT IGNORE INTO rollup_fold (id, folded_before) SELECT 1,
        GREATEST(COALESCE((SELECT MAX(minute) FROM readings_1m) + 60000, 0), UNIX_TIMESTAMP() * 1000 DIV 60000 * 60000)",
    "CREATE INDEX readings_1m_minute ON readings_1m (minute)",
];

// Migration 16 (MariaDB/MySQL only): the per-minute rollups of the readings a batch writes are
// folded from `readings` every two seconds (`store::fold`), instead of being upserted by every
// batch: a fleet's batch of 1,000 sensors spent about a third of its time on its minutes. The
// readings get an id in insertion order (InnoDB kept a hidden one as the table's key anyway), so
// that the fold finds what is new as one range of the table's key, however large the table.
// `minutes_through` is the last reading id folded; `minutes_before` the time from which a
// batch leaves its readings' minutes to the fold (it upserts those of older, late readings
// itself). Every reading stored so far counts as folded (their batches upserted their minutes),
// and `minutes_before` starts at the present, so that an import of old readings before the
// first fold writes their minutes as before.
const MINUTES_FOLDED_MYSQL: &[&str] = &[
    "ALTER TABLE readings ADD COLUMN id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
    "ALTER TABLE rollup_fold ADD COLUMN minutes_through BIGINT NOT NULL DEFAULT 0, ADD COLUMN minutes_before BIGINT NOT NULL DEFAULT 0",
    "UPDATE rollup_fold SET minutes_through = (SELECT COALESCE(MAX(id), 0) FROM readings), minutes_before = UNIX_TIMESTAMP() * 1000",
];

// Migration 17 (MariaDB/MySQL only): a fleet's batches (a reading or two per sensor) are
// appended to `readings_staged`, which has no index but its key, and the minute fold
// (`store::fold`) moves what it holds into `readings` in (sensor, time) order, after rolling it
// up into minutes, in the same transaction. With a history, each sensor's newest page of the
// `(sensor_id, ts)` index is a page of its own: 10,000 sensors' are more than InnoDB's default
// buffer pool holds, and a batch of 10,000 readings read and wrote 10,000 pages (10,000 sensors
// with 1,000 readings each stored: 13.5k/10.8k readings/s inserted straight, 45.5k staged and
// moved every 50,000 readings, 63.6k every 100,000; BENCHMARKS.md part 10). What reads raw
// readings reads `readings_all`, the view of both tables (`Series::Raw.source`); what reads by
// id or deletes names the tables. `readings` keeps its name, so that nothing which queries it
// breaks; it holds the readings that are folded into minutes, and the readings of batches that
// were not staged.
pub(super) const MYSQL_STAGED_READINGS: &str = "readings_staged";
pub(super) const MYSQL_ALL_READINGS: &str = "readings_all";
const STAGED_READINGS_MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS readings_staged (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        sensor_id BIGINT NOT NULL, ts BIGINT NOT NULL, value DOUBLE NOT NULL) ENGINE=InnoDB",
    "CREATE OR REPLACE VIEW readings_all AS
        SELECT sensor_id, ts, value FROM readings UNION ALL SELECT sensor_id, ts, value FROM readings_staged",
];

// Migration 18 (MariaDB/MySQL only): the minute fold rolls the staged readings up where they
// are, up to `staged_through` (a range of the staged table's key, as `minutes_through` is of
// `readings`), and moves them into `readings` later, in transactions of their own that batches
// do not wait for (`store::fold`). Moving them in the fold's transaction made every batch wait
// for the move: 1-5 s for 100,000-200,000 readings into a table of 5 million. Every staged
// reading there is now was written before and is not folded yet: 0.
const STAGED_FOLDED_MYSQL: &[&str] = &["ALTER TABLE rollup_fold ADD COLUMN staged_through BIGINT NOT NULL DEFAULT 0"];
