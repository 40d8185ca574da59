//! What a failed write means for the records in it: wait and retry the same transaction
//! (the disk is full, the server is restarting, a lock is held), or one of its records will
//! never be stored (a value the database refuses), so it must be set apart. Decided from the
//! driver's error codes, per database.

use super::StoreError;
use std::fmt;

/// Why a write failed, as far as ingest needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No space left for the database (SQLite `SQLITE_FULL`, PostgreSQL 53100, MariaDB 1021/1114).
    DiskFull,
    /// Another writer holds a lock, or the database is busy or read-only for now.
    Busy,
    /// The server cannot be reached, is restarting, or the connection broke.
    Unreachable,
    /// The database refused the data itself (too long, invalid for the column, a constraint):
    /// retrying the same record can never succeed.
    Refused,
    /// Anything else; treated as transient: retried, never dropped.
    Other,
}

impl Failure {
    /// Whether retrying the same records later can succeed.
    pub fn is_transient(self) -> bool {
        self != Self::Refused
    }

    /// A label for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::Busy => "busy",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }

    /// For people: log lines, `/healthz`, the dashboard's banner.
    pub fn in_words(self) -> &'static str {
        match self {
            Self::DiskFull => "disk full",
            Self::Busy => "database busy or locked",
            Self::Unreachable => "database unreachable",
            Self::Refused => "database refused a record",
            Self::Other => "database error",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.in_words())
    }
}

impl StoreError {
    /// A batch named a sensor that is gone (deleted while the batch was planned), or a fold
    /// read minutes of a sensor deleted meanwhile: a row's foreign key failed, or (PostgreSQL's
    /// readings) the sensor's row was missing.
    pub(super) fn names_a_deleted_sensor(&self) -> bool {
        match self {
            Self::SensorDeleted => true,
            Self::Query { cause: sqlx::Error::Database(e), .. } => e.is_foreign_key_violation(),
            Self::Sqlite { cause: rusqlite::Error::SqliteFailure(e, _), .. } => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
            }
            _ => false,
        }
    }

    /// What this error means for the records that were being written.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Query { cause, .. } | Self::Connect { cause, .. } | Self::Migrate { cause, .. } => classify(cause),
            Self::Sqlite { cause: rusqlite::Error::SqliteFailure(e, _), .. } => sqlite_failure(e.extended_code),
            // A value rusqlite could not bind or read.
            Self::Sqlite { cause: rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::IntegralValueOutOfRange(..), .. } => {
                Failure::Refused
            }
            Self::Sqlite { .. } => Failure::Other,
            Self::UnsupportedUrl(_)
            | Self::InvalidUrl { .. }
            | Self::NoDatabase(_)
            | Self::NewerSchema { .. }
            | Self::SensorDeleted
            | Self::ExportStalled(_) => Failure::Other,
        }
    }
}

fn classify(error: &sqlx::Error) -> Failure {
    use sqlx::Error as E;
    match error {
        E::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite_failure(db.code().and_then(|c| c.parse().ok()).unwrap_or(0))
            } else if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                mysql_failure(mysql.number(), mysql.code().unwrap_or_default())
            } else {
                sqlstate_failure(db.code().as_deref().unwrap_or_default())
            }
        }
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => Failure::Unreachable,
        E::Encode(_) => Failure::Refused,
        _ => Failure::Other,
    }
}

/// SQLite extended result codes: the primary code is the low byte.
fn sqlite_failure(code: i32) -> Failure {
    match code & 0xff {
        13 => Failure::DiskFull,                  // SQLITE_FULL
        5 | 6 | 8 => Failure::Busy,               // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY
        10 | 14 | 7 | 15 => Failure::Unreachable, // SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_NOMEM, SQLITE_PROTOCOL
        18 | 19 | 20 | 25 => Failure::Refused,    // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
        _ => Failure::Other,
    }
}

/// MariaDB/MySQL error numbers first (several data errors share SQLSTATE HY000), then SQLSTATE.
fn mysql_failure(number: u16, sqlstate: &str) -> Failure {
    match number {
        1021 | 1114 => Failure::DiskFull,                  // ER_DISK_FULL, ER_RECORD_FILE_FULL
        1205 | 1213 | 1290 | 1836 => Failure::Busy,        // lock wait timeout, deadlock, read-only
        1053 | 2006 | 2013 | 1927 => Failure::Unreachable, // server shutdown, gone away, lost, killed
        1264 | 1265 | 1292 | 1366 | 1406 | 1048 | 1062 | 1452 | 3819 => Failure::Refused,
        _ => sqlstate_failure(sqlstate),
    }
}

/// SQLSTATE classes (PostgreSQL, and MySQL's fallback).
fn sqlstate_failure(sqlstate: &str) -> Failure {
    match sqlstate {
        "53100" => Failure::DiskFull,
        s if s.starts_with("22") || s.starts_with("23") => Failure::Refused, // data exception, integrity constraint
        s if s.starts_with("40") || s.starts_with("55") || s == "25006" => Failure::Busy, // rollback, lock, read-only
        s if s.starts_with("08") || s.starts_with("57") || s.starts_with("53") => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// Whether a MariaDB/MySQL schema change failed because it is already there: a column, an index
/// or a primary key of that name exists (errors 1060, 1061, 1068).
pub(super) fn already_applied_on_mysql(e: &sqlx::Error) -> bool {
    const DUPLICATE_COLUMN: u16 = 1060;
    const DUPLICATE_KEY_NAME: u16 = 1061;
    const MULTIPLE_PRIMARY_KEYS: u16 = 1068;
    e.as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| matches!(e.number(), DUPLICATE_COLUMN | DUPLICATE_KEY_NAME | MULTIPLE_PRIMARY_KEYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_what_ingest_does_about_them() {
        assert_eq!(sqlite_failure(13), Failure::DiskFull);
        assert_eq!(sqlite_failure(1811), Failure::Refused, "SQLITE_CONSTRAINT_TRIGGER");
        assert_eq!(sqlite_failure(261), Failure::Busy, "SQLITE_BUSY_RECOVERY");
        assert_eq!(sqlite_failure(266), Failure::Unreachable, "SQLITE_IOERR_READ");
        assert_eq!(mysql_failure(1406, "22001"), Failure::Refused, "data too long");
        assert_eq!(mysql_failure(1366, "HY000"), Failure::Refused, "incorrect string value");
        assert_eq!(mysql_failure(1114, "HY000"), Failure::DiskFull);
        assert_eq!(mysql_failure(9999, "08S01"), Failure::Unreachable);
        assert_eq!(sqlstate_failure("53100"), Failure::DiskFull);
        assert_eq!(sqlstate_failure("23514"), Failure::Refused, "check violation");
        assert_eq!(sqlstate_failure("22001"), Failure::Refused, "string data right truncation");
        assert_eq!(sqlstate_failure("57P01"), Failure::Unreachable, "admin shutdown");
        assert_eq!(sqlstate_failure("40P01"), Failure::Busy, "deadlock");
        assert_eq!(sqlstate_failure("42P01"), Failure::Other, "a missing table is retried, not dropped");
        assert!(Failure::Other.is_transient() && !Failure::Refused.is_transient());
    }
}
