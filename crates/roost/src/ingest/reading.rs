//! What ingest produces: readings of sensors, and rejects with their reasons.

use std::fmt;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(since.as_millis() as i64)
    }
}

/// Identifies a sensor: owner / place / category, each a non-empty topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorKey {
    pub owner: String,
    pub place: String,
    pub category: String,
}

impl fmt::Display for SensorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.owner, self.place, self.category)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: SensorKey,
    pub ts: TimestampMs,
    pub value: f64,
}

/// Why a publish did not become a reading. Stored as text in `rejects.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    NoTemplate,
    Empty,
    TooLarge,
    InvalidUtf8,
    NotANumber,
    NotFinite,
    BadJson,
    BadTimestamp,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoTemplate => "topic matches no template",
            Self::Empty => "empty payload",
            Self::TooLarge => "payload too large",
            Self::InvalidUtf8 => "payload is not UTF-8",
            Self::NotANumber => "payload is not a number",
            Self::NotFinite => "value is not finite",
            Self::BadJson => "JSON payload has the wrong shape",
            Self::BadTimestamp => "bad timestamp",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quarantined publish, as stored in `rejects`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub received_at: TimestampMs,
    pub client_id: String,
    pub topic: String,
    /// The first [`REJECT_PAYLOAD_PREFIX`] bytes of the payload.
    pub payload_prefix: Vec<u8>,
    pub reason: RejectReason,
}

/// How much of a rejected payload is kept.
pub const REJECT_PAYLOAD_PREFIX: usize = 256;

/// The newest reading of one sensor in a committed batch, as pushed to live dashboards.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveReading {
    pub owner: String,
    pub place: String,
    pub category: String,
    pub ts: i64,
    pub value: f64,
}
