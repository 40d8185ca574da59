//! Durable ingest: publishes on template topics become readings (or rejects) in the database,
//! and the broker acknowledges them only once committed.
//!
//! Architecture invariant: ingest knows neither SQL (that is `store`) nor MQTT bytes (that is
//! `broker`): it turns a topic and a payload into records and hands them to the batch writer.

mod payload;
mod template;
mod writer;

pub use template::{Captures, TemplateError, TopicTemplate};
pub use writer::{run_writer, CommitFeed, Committed, Feeds, IngestStats, IngestStatsSnapshot, LiveFeed, WriterConfig};

use crate::broker::{BoxFuture, IngestSink, Message, NotStored, Offered};
use crate::log_once::LogOnce;
use crate::model::{Reading, Reject, RejectReason, SensorKey, TimestampMs, UpstreamDelivery, REJECT_PAYLOAD_PREFIX};
use bytes::Bytes;
use mqtt_codec::TopicName;
use smallvec::{smallvec, SmallVec};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

/// What one publish became.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Readings(Readings),
    Reject(Reject),
}

/// The readings of one publish: most carry one, kept inline (no allocation of its own: a
/// fleet's records are made on the connections' threads and dropped on the writer's).
pub type Readings = SmallVec<[Reading; 1]>;

/// A record on its way to the database, with whom to tell once it is committed.
pub struct Job {
    pub record: Record,
    /// The publish it came from: if the database refuses the record, it becomes a reject.
    pub source: Source,
    pub committed: oneshot::Sender<Result<(), NotStored>>,
    /// When it was queued (health: how long records wait for the database).
    pub queued_at: Instant,
    /// The upstream message it came from (`serve --upstream`), recorded with it.
    pub delivery: Option<UpstreamDelivery>,
}

/// The publish a record came from. Cheap to keep: the topic and payload share the packet's
/// memory.
#[derive(Debug, Clone)]
pub struct Source {
    pub client_id: Arc<str>,
    pub topic: TopicName,
    pub payload: Bytes,
    pub received_at: TimestampMs,
}

impl Source {
    /// This publish as a reject with `reason`.
    pub fn reject(&self, reason: RejectReason) -> Reject {
        Reject {
            received_at: self.received_at,
            client_id: String::from(&*self.client_id),
            topic: self.topic.as_str().to_owned(),
            payload_prefix: self.payload[..self.payload.len().min(REJECT_PAYLOAD_PREFIX)].to_vec(),
            reason,
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub templates: Vec<TopicTemplate>,
    /// Payloads larger than this are rejected (`payload too large`).
    pub max_payload: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { templates: TopicTemplate::defaults(), max_payload: 4096 }
    }
}

/// How far a reading's own `ts` may be ahead of the time it was received. A reading from the
/// future would stay its sensor's latest value (the newest by reading time) until that time
/// came, and hide every real reading from the dashboard and the alert rules until then.
pub const MAX_AHEAD_MS: i64 = 5 * 60_000;

/// How many (client, reason) pairs are remembered for "log once"; then the memory starts over.
const LOGGED_REJECTS_LIMIT: usize = 10_000;

/// The broker's [`IngestSink`]: interprets publishes and queues them for the writer. The queue
/// is bounded; a full queue makes `offer` wait, which stops the publishing session from reading.
pub struct Ingest {
    config: IngestConfig,
    jobs: mpsc::Sender<Job>,
    stats: Arc<IngestStats>,
    logged_rejects: LogOnce<(String, RejectReason)>,
}

impl Ingest {
    pub fn new(config: IngestConfig, jobs: mpsc::Sender<Job>, stats: Arc<IngestStats>) -> Self {
        Self { config, jobs, stats, logged_rejects: LogOnce::new(LOGGED_REJECTS_LIMIT) }
    }

    /// Turns one publish into readings or a reject. Pure apart from the clock.
    pub fn interpret(&self, client_id: &str, topic: &str, payload: &[u8], received_at: TimestampMs) -> Record {
        let reject = |reason| {
            Record::Reject(Reject {
                received_at,
                client_id: client_id.to_owned(),
                topic: topic.to_owned(),
                payload_prefix: payload[..payload.len().min(REJECT_PAYLOAD_PREFIX)].to_vec(),
                reason,
            })
        };
        let Some((template, captures)) = self.config.templates.iter().find_map(|t| t.captures(topic).map(|c| (t, c))) else {
            return reject(RejectReason::NoTemplate);
        };
        if payload.len() > self.config.max_payload {
            return reject(RejectReason::TooLarge);
        }
        let key = |category: &str| SensorKey::new(captures.owner, captures.place, category);
        let parsed = match captures.category {
            Some(category) if template.has_category() => {
                payload::parse_single(payload).and_then(|(value, ts)| Ok(smallvec![(key(category)?, value, ts)]))
            }
            _ => payload::parse_multi(payload)
                .and_then(|(values, ts)| values.into_iter().map(|(c, v)| Ok((key(&c)?, v, ts))).collect::<Result<SmallVec<[_; 1]>, _>>()),
        };
        match parsed {
            Ok(values) if values.iter().any(|(_, _, ts)| ts.is_some_and(|ts| ts.0 > received_at.0.saturating_add(MAX_AHEAD_MS))) => {
                reject(RejectReason::FutureTimestamp)
            }
            Ok(values) => Record::Readings(
                values.into_iter().map(|(sensor, value, ts)| Reading { sensor, ts: ts.unwrap_or(received_at), value }).collect(),
            ),
            Err(reason) => reject(reason),
        }
    }

    /// Interprets a publish and queues it for the writer, waiting while the queue is full; the
    /// receipt resolves once it is committed. `delivery`: the upstream message it came from.
    pub async fn queue(&self, client_id: &Arc<str>, message: &Message, delivery: Option<UpstreamDelivery>) -> Offered {
        let received_at = TimestampMs::now();
        let record = self.interpret(client_id, message.topic.as_str(), &message.payload, received_at);
        let mut quarantined = None;
        if let Record::Reject(reject) = &record {
            self.stats.count_reject_seen();
            self.log_reject_once(reject);
            quarantined = Some(format!("not a reading ({}): kept in rejects", reject.reason));
        }
        let source =
            Source { client_id: Arc::clone(client_id), topic: message.topic.clone(), payload: message.payload.clone(), received_at };
        let (committed, receipt) = oneshot::channel();
        // A closed queue (writer gone) drops `committed`: the session then closes without
        // acknowledging, and the client sends again later.
        let _ = self.jobs.send(Job { record, source, committed, queued_at: Instant::now(), delivery }).await;
        Offered { receipt, quarantined }
    }

    fn log_reject_once(&self, reject: &Reject) {
        if self.logged_rejects.first((reject.client_id.clone(), reject.reason)) {
            warn!(client_id = %reject.client_id, topic = %reject.topic, reason = %reject.reason,
                "publish rejected and quarantined in `rejects` (logged once per client and reason)");
        }
    }
}

impl IngestSink for Ingest {
    fn wants(&self, topic: &str) -> bool {
        let root = topic.split('/').next().unwrap_or_default();
        self.config.templates.iter().any(|t| t.root() == root)
    }

    fn offer<'a>(&'a self, client_id: &'a Arc<str>, message: &'a Message) -> BoxFuture<'a, Option<Offered>> {
        Box::pin(async move { Some(self.queue(client_id, message, None).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> Ingest {
        let (tx, _rx) = mpsc::channel(1);
        Ingest::new(IngestConfig::default(), tx, Arc::default())
    }

    fn reading(owner: &str, place: &str, category: &str, value: f64, ts: i64) -> Reading {
        Reading { sensor: SensorKey { owner: owner.into(), place: place.into(), category: category.into() }, ts: TimestampMs(ts), value }
    }

    #[test]
    fn template_topics_become_readings() {
        let i = ingest();
        assert_eq!(
            i.interpret("c", "iot/yanjo/sensor/livingroom/illuminate", b"512", TimestampMs(7)),
            Record::Readings(smallvec![reading("yanjo", "livingroom", "illuminate", 512.0, 7)])
        );
        assert_eq!(
            i.interpret(
                "c",
                "iot/yanjo/sensor/kitchen",
                br#"{"temperature": 21, "humidity": 40, "ts": 1700000000005}"#,
                TimestampMs(1_800_000_000_000)
            ),
            Record::Readings(smallvec![
                reading("yanjo", "kitchen", "humidity", 40.0, 1_700_000_000_005),
                reading("yanjo", "kitchen", "temperature", 21.0, 1_700_000_000_005)
            ])
        );
    }

    #[test]
    fn other_topics_are_rejected_or_ignored() {
        let i = ingest();
        let Record::Reject(r) = i.interpret("dev1", "iot/livingroom/temp", b"23.4", TimestampMs(1)) else { panic!() };
        assert_eq!((r.reason, r.client_id.as_str(), r.payload_prefix.as_slice()), (RejectReason::NoTemplate, "dev1", &b"23.4"[..]));
        let Record::Reject(r) = i.interpret("dev1", "iot/a/sensor/b/c", &vec![b'1'; 5000], TimestampMs(1)) else { panic!() };
        assert_eq!((r.reason, r.payload_prefix.len()), (RejectReason::TooLarge, REJECT_PAYLOAD_PREFIX));
        let long = "p".repeat(300);
        let Record::Reject(r) = i.interpret("dev1", &format!("iot/a/sensor/{long}/t"), b"1", TimestampMs(1)) else { panic!() };
        assert_eq!(r.reason, RejectReason::LevelTooLong, "a place too long for the database is refused at the edge");
        let Record::Reject(r) = i.interpret("dev1", "iot/a/sensor/kitchen", format!(r#"{{"{long}": 1}}"#).as_bytes(), TimestampMs(1))
        else {
            panic!()
        };
        assert_eq!(r.reason, RejectReason::LevelTooLong, "so is a category named in a JSON payload");
        for topic in ["iot/a/sensor/../t", "iot/a/sensor/b/.", "iot/../sensor/b/t"] {
            let Record::Reject(r) = i.interpret("dev1", topic, b"1", TimestampMs(1)) else { panic!("{topic}") };
            assert_eq!(r.reason, RejectReason::DotLevel, "{topic}: no URL of the dashboard could name this sensor");
        }
        let Record::Reject(r) = i.interpret("dev1", "iot/a/sensor/b", br#"{"..": 1}"#, TimestampMs(1)) else { panic!() };
        assert_eq!(r.reason, RejectReason::DotLevel);
        assert!(matches!(i.interpret("dev1", "iot/a/sensor/.../t", b"1", TimestampMs(1)), Record::Readings(_)), "three dots are a name");
        let now = 1_800_000_000_000;
        let at = |ts: i64| format!(r#"{{"value": 1, "ts": {ts}}}"#);
        let Record::Reject(r) = i.interpret("dev1", "iot/a/sensor/b/c", at(now + MAX_AHEAD_MS + 1).as_bytes(), TimestampMs(now)) else {
            panic!("a reading from the future")
        };
        assert_eq!(r.reason, RejectReason::FutureTimestamp);
        let Record::Reject(r) =
            i.interpret("dev1", "iot/a/sensor/b", format!(r#"{{"t": 1, "ts": {}}}"#, now / 1000 + 3600).as_bytes(), TimestampMs(now))
        else {
            panic!("local time sent as UTC, an hour ahead, in seconds")
        };
        assert_eq!(r.reason, RejectReason::FutureTimestamp);
        for ts in [now + MAX_AHEAD_MS, now - 86_400_000, 0] {
            assert!(matches!(i.interpret("dev1", "iot/a/sensor/b/c", at(ts).as_bytes(), TimestampMs(now)), Record::Readings(_)), "{ts}");
        }
        assert!(i.wants("iot/anything"));
        assert!(!i.wants("$SYS/broker/uptime"));
        assert!(!i.wants("devices/lamp/set"));
    }
}
