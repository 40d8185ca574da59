//! The domain types every layer shares: sensors and their readings, rejects with their
//! reasons, timestamps. Below `ingest` and `store`, so arrows point one way
//! (ingest → store → model). No I/O.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// A time given as a number below this is in epoch seconds: as milliseconds it would be before
/// March 1973, as seconds it is any time before the year 5138. Boards that keep time by NTP
/// often send seconds; stored as milliseconds, their readings landed in January 1970.
pub const EPOCH_SECONDS_BELOW: f64 = 100_000_000_000.0;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The last millisecond of the year 9999: later times are refused everywhere (RFC 3339 and
    /// every database's date functions stop there).
    pub const MAX: Self = Self(253_402_300_799_999);

    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(since.as_millis() as i64)
    }

    /// Epoch milliseconds (`1700000000000`) or RFC 3339 (`2023-11-14T22:13:20.5Z`, any offset;
    /// finer than a millisecond is cut), from 1970 to the end of 9999.
    pub fn parse(value: &str) -> Result<Self, String> {
        let ms = match value.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok())
                .ok_or_else(|| format!("must be epoch milliseconds or an RFC 3339 time, not {value:?}"))?,
        };
        if !(0..=Self::MAX.0).contains(&ms) {
            return Err(format!("must be between 0 (1970) and {} (the end of 9999), not {value}", Self::MAX.0));
        }
        Ok(Self(ms))
    }

    /// A time given as a number (a payload's `ts`, an imported row's `time`): epoch
    /// milliseconds, or epoch seconds below [`EPOCH_SECONDS_BELOW`], with a fraction kept to the
    /// millisecond; `None` outside 1970 to the end of 9999.
    pub fn from_epoch_number(number: f64) -> Option<Self> {
        // Seconds with a fraction: to the microsecond first, so that 1080792516.169, whose
        // product with 1000 lands just below ….169000, keeps its millisecond.
        let ms = if (0.0..EPOCH_SECONDS_BELOW).contains(&number) { ((number * 1e6).round() / 1e3).floor() } else { number };
        (0.0..=Self::MAX.0 as f64).contains(&ms).then_some(Self(ms as i64))
    }

    /// RFC 3339 in UTC, to the millisecond when it has one (`2023-11-14T22:13:20.5Z`).
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }
}

/// Identifies a sensor: owner / place / category, each a non-empty topic level of at most
/// [`MAX_LEVEL_CHARS`] characters (ingest checks with [`SensorKey::new`]; the schema enforces
/// the same limit on every database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorKey {
    pub owner: Level,
    pub place: Level,
    pub category: Level,
}

/// One level of a sensor's key. Kept inline up to 24 bytes (most names are short), so that a
/// reading costs no allocation of its own per level: a fleet's readings are made by the
/// connections' threads and dropped, a batch at a time, by the writer's.
pub type Level = compact_str::CompactString;

/// Longest owner, place or category, in characters: MariaDB/MySQL key columns are
/// `VARCHAR(191)` (191 four-byte characters fit a unique index), and SQLite and PostgreSQL
/// refuse longer ones too, so every database stores the same sensors.
pub const MAX_LEVEL_CHARS: usize = 191;

impl SensorKey {
    /// A key whose levels fit every database, or the reason it cannot be stored.
    pub fn new(owner: &str, place: &str, category: &str) -> Result<Self, RejectReason> {
        for level in [owner, place, category] {
            if level.is_empty() {
                return Err(RejectReason::NoTemplate);
            }
            if level.chars().count() > MAX_LEVEL_CHARS {
                return Err(RejectReason::LevelTooLong);
            }
            if level == "." || level == ".." {
                return Err(RejectReason::DotLevel);
            }
        }
        Ok(Self { owner: owner.into(), place: place.into(), category: category.into() })
    }
}

/// The newest value of each key, by reading time; of two at the same time, the later in
/// `readings` wins. A sensor's stored latest value and the live feed both follow this rule, but
/// for one case on MariaDB/MySQL: of two readings at the same millisecond, one staged (a
/// fleet's batch) and one not, the stored latest value is the staged one, whichever came later
/// (the staged reading's arrival is not kept beside the other's).
pub fn newest_per_key<K: Eq + Hash, V>(
    readings: impl IntoIterator<Item = (K, TimestampMs, V)>,
) -> HashMap<K, (TimestampMs, V), ahash::RandomState> {
    let mut newest = HashMap::default();
    for (key, ts, value) in readings {
        match newest.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((ts, value));
            }
            std::collections::hash_map::Entry::Occupied(mut slot) if ts >= slot.get().0 => {
                slot.insert((ts, value));
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
    }
    newest
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
    /// A `ts` more than [`crate::ingest::MAX_AHEAD_MS`] after the time Roost received it (a
    /// board's clock set wrong, a zone east of UTC sending its local time as UTC).
    FutureTimestamp,
    /// An owner, place or category over [`MAX_LEVEL_CHARS`] characters.
    LevelTooLong,
    /// An owner, place or category that is `.` or `..`: legal in MQTT, but a URL path segment
    /// the dashboard's browser (and most HTTP clients) would resolve away, so the sensor could
    /// not be opened.
    DotLevel,
    /// The database refused to store the reading (its error is logged); ingest moved it here
    /// so that the other devices' readings keep flowing.
    RefusedByDatabase,
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
            Self::FutureTimestamp => "timestamp more than 5 minutes in the future",
            Self::LevelTooLong => "topic level longer than 191 characters",
            Self::DotLevel => "topic level is . or .. (no sensor can be named so)",
            Self::RefusedByDatabase => "refused by the database",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long data is kept: a sensor's raw readings, the rollups, the rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keep {
    Forever,
    For(std::time::Duration),
}

impl Keep {
    /// The oldest time still kept at `now` (`None`: everything is kept).
    pub fn cutoff(self, now: TimestampMs) -> Option<TimestampMs> {
        match self {
            Self::Forever => None,
            Self::For(d) => Some(TimestampMs(now.0.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))),
        }
    }

    /// As stored in `sensors.retention_ms`: 0 is forever.
    pub fn as_ms(self) -> i64 {
        match self {
            Self::Forever => 0,
            Self::For(d) => (d.as_millis().min(i64::MAX as u128) as i64).max(1),
        }
    }

    /// From `sensors.retention_ms`: 0 (or less) is forever.
    pub fn from_ms(ms: i64) -> Self {
        if ms <= 0 {
            Self::Forever
        } else {
            Self::For(std::time::Duration::from_millis(ms as u64))
        }
    }
}

impl fmt::Display for Keep {
    /// `forever`, or the largest whole unit: `30d`, `12h`, `90m`, `45s`, `500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self::For(d) = self else { return f.write_str("forever") };
        let ms = d.as_millis();
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
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
    pub owner: Level,
    pub place: Level,
    pub category: Level,
    pub ts: i64,
    pub value: f64,
}

/// A stable hash of `chunks` one after the other (FNV-1a, 64 bit): the same across runs,
/// versions and machines, unlike the standard library's hasher. For ETags and recognising a
/// message sent twice; not against an adversary.
pub fn fnv1a(chunks: &[&[u8]]) -> u64 {
    chunks.iter().flat_map(|c| c.iter()).fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A message taken from an upstream broker (`serve --upstream`), recorded with its reading in
/// one transaction so that the same message sent again after a crash is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDelivery {
    /// The node that took it (`--node-id`).
    pub node: std::sync::Arc<str>,
    /// The upstream broker's packet id: it keeps the id when it sends the message again.
    pub packet_id: u16,
    /// FNV-1a of the topic and the payload.
    pub hash: i64,
    /// Counts up on the node across restarts: which deliveries were the latest.
    pub seq: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_keys_fit_every_database_or_say_why_not() {
        let long = "p".repeat(MAX_LEVEL_CHARS);
        assert_eq!(SensorKey::new("yanjo", &long, "t").unwrap().place.chars().count(), MAX_LEVEL_CHARS);
        let wide = "é".repeat(MAX_LEVEL_CHARS);
        assert!(SensorKey::new("yanjo", "kitchen", &wide).is_ok(), "the limit counts characters, not bytes");
        assert_eq!(SensorKey::new("yanjo", &format!("{long}p"), "t"), Err(RejectReason::LevelTooLong));
        assert_eq!(SensorKey::new(&"o".repeat(300), "kitchen", "t"), Err(RejectReason::LevelTooLong));
        assert_eq!(SensorKey::new("yanjo", "", "t"), Err(RejectReason::NoTemplate));
        assert_eq!(RejectReason::LevelTooLong.as_str(), format!("topic level longer than {MAX_LEVEL_CHARS} characters"));
    }

    #[test]
    fn keeps_round_trip_through_their_column_and_their_text() {
        use std::time::Duration;
        let month = Keep::For(Duration::from_secs(30 * 86_400));
        assert_eq!(Keep::from_ms(month.as_ms()), month);
        assert_eq!(Keep::from_ms(Keep::Forever.as_ms()), Keep::Forever);
        assert_eq!(month.to_string(), "30d");
        assert_eq!(Keep::For(Duration::from_secs(5400)).to_string(), "90m");
        assert_eq!(Keep::Forever.to_string(), "forever");
        assert_eq!(month.cutoff(TimestampMs(40 * 86_400_000)), Some(TimestampMs(10 * 86_400_000)));
        assert_eq!(Keep::Forever.cutoff(TimestampMs(1)), None);
    }
}

/// How bad a firing alert is (Alertmanager's usual three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "info" => Ok(Self::Info),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            other => Err(format!("severity must be info, warning or critical, not {other:?}")),
        }
    }
}

/// What an alert rule watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// A value above `level` fires; the alert resolves only once a value is at or below
    /// `clear` (hysteresis, `clear <= level`).
    Above { level: f64, clear: f64 },
    /// A value below `level` fires; resolves at or above `clear` (`clear >= level`).
    Below { level: f64, clear: f64 },
    /// No reading from a sensor for `after`.
    Stale { after: std::time::Duration },
}

/// An alert rule: which sensors (a topic filter over their topics), what condition, how long it
/// must hold, and where to tell. Owned by a user, and limited to the sensors that user may see.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// The database's id (0 before it is stored).
    pub id: i64,
    pub owner: String,
    /// Unique per owner; a topic level (`[A-Za-z0-9_.-]`, 1 to 64 characters).
    pub name: String,
    /// A topic filter matched against the sensors' topics under the templates.
    pub filter: mqtt_codec::TopicFilter,
    pub condition: Condition,
    /// How long a threshold must hold before the alert fires (Prometheus' `for`).
    pub hold: std::time::Duration,
    pub severity: Severity,
    /// Where state changes are POSTed, if anywhere (`http://` or `https://`).
    pub webhook: Option<String>,
    /// Defined in the config file (then the API and the dashboard cannot change or delete it).
    pub from_config: bool,
    /// Webhooks are not sent until then (states still change and are published).
    pub silenced_until: Option<TimestampMs>,
}

/// Pending (the condition holds, the hold time has not passed) or firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Pending,
    Firing,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

/// The state of one rule for one sensor that is not fine (a fine one has no state).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub status: AlertStatus,
    /// When the condition started to hold (pending) or the alert fired (firing).
    pub since: TimestampMs,
    /// The value that made it pending or firing (none for a stale sensor).
    pub value: Option<f64>,
    /// Who acknowledged it, while it fires.
    pub acked_by: Option<String>,
}

/// A rule's state change as history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub id: i64,
    pub at: TimestampMs,
    pub rule_id: i64,
    pub rule_owner: String,
    pub rule_name: String,
    pub sensor: SensorKey,
    /// `firing`, `resolved` or `acknowledged`.
    pub state: String,
    pub severity: Severity,
    pub value: Option<f64>,
    /// Who, for an acknowledgement.
    pub by: Option<String>,
}
