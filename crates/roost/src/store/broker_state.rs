//! The broker's durable state: retained messages, persistent sessions with their
//! subscriptions and queued messages, incoming QoS 2 packet ids, and the wills of connected
//! clients. Written as net changes ([`StateBatch`], one transaction per batch) and read back
//! whole at start ([`Store::load_broker_state`]).

use super::{query_err, Dialect, Pool, Store, StoreError};
use futures_util::stream::BoxStream;
use futures_util::TryStreamExt;
use sqlx::{QueryBuilder, Row};

/// Rows per multi-row statement: at most 7 binds each, far below every backend's limit.
const CHUNK: usize = 500;

/// A stored retained message, or a message queued for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5.0 properties, in the broker's own encoding (`broker_store`); `None`: none.
    pub properties: Option<Vec<u8>>,
}

/// A message queued for a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub seq: i64,
    pub client_id: String,
    pub message: StoredMessage,
    /// Set once a QoS 2 message was sent with it.
    pub packet_id: Option<u16>,
    /// QoS 2: the subscriber's PUBREC came.
    pub released: bool,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub client_id: String,
    pub username: Option<String>,
    /// When its connection ended (Unix ms); `None` while connected.
    pub offline_since: Option<i64>,
    /// Its own expiry interval (MQTT 5.0), in seconds; `None`: the server's.
    pub expiry_secs: Option<i64>,
}

/// A persistent session's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    /// MQTT 5.0 options, packed (see migration 11); 0 for a 3.1.1 subscription.
    pub options: i64,
}

/// A connected client's will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRow {
    pub client_id: String,
    pub username: Option<String>,
    pub message: StoredMessage,
}

/// The net effect of a run of broker state changes: what one transaction writes. Applied in
/// field order: sessions dropped first (with everything they had), so that rows added after a
/// drop in the same batch survive it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateBatch {
    pub dropped_sessions: Vec<String>,
    pub sessions: Vec<SessionRow>,
    /// (client id, Unix ms, expiry seconds): a session known to the database went offline.
    pub closed_sessions: Vec<(String, i64, Option<i64>)>,
    pub subscribed: Vec<SubscriptionRow>,
    pub unsubscribed: Vec<(String, String)>,
    pub queued: Vec<QueueRow>,
    /// (seq, packet id) of QoS 2 messages sent, already stored as queued.
    pub sent: Vec<(i64, u16)>,
    /// Seqs of QoS 2 messages released, already stored as queued.
    pub released: Vec<i64>,
    /// Seqs of messages acknowledged by their subscriber (or dropped).
    pub delivered: Vec<i64>,
    /// (client id, packet id) of incoming QoS 2 publishes not yet released.
    pub inbound_received: Vec<(String, u16)>,
    pub inbound_released: Vec<(String, u16)>,
    /// Retained messages stored, by topic.
    pub retained: Vec<StoredMessage>,
    /// Topics whose retained message was cleared.
    pub retained_cleared: Vec<String>,
    pub wills: Vec<WillRow>,
    pub wills_cleared: Vec<String>,
}

impl StateBatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Everything stored, as [`Store::load_broker_state`] reads it back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredBrokerState {
    pub retained: Vec<StoredMessage>,
    pub sessions: Vec<SessionRow>,
    pub subscriptions: Vec<SubscriptionRow>,
    /// In seq order.
    pub queue: Vec<QueueRow>,
    pub inbound_qos2: Vec<(String, u16)>,
    pub wills: Vec<WillRow>,
}

/// `INSERT … VALUES …` followed by this replaces the row with the same key.
fn upsert_tail(dialect: Dialect, key: &str, columns: &[&str]) -> String {
    let set = |f: &dyn Fn(&str) -> String| columns.iter().map(|c| f(c)).collect::<Vec<_>>().join(", ");
    match dialect {
        Dialect::MySql => format!(" ON DUPLICATE KEY UPDATE {}", set(&|c| format!("{c} = VALUES({c})"))),
        Dialect::Sqlite | Dialect::Postgres => format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set(&|c| format!("{c} = excluded.{c}"))),
    }
}

/// Runs `$statement` (ending in `IN (`) in `$tx` once per chunk of `$values`, each value bound
/// as `$bind`, closing the list. A macro: the transaction's type differs per backend (`on_pool!`).
macro_rules! in_list {
    ($tx:ident, $statement:expr, $values:expr, |$value:ident| $bind:expr, $doing:literal) => {
        for chunk in $values.chunks(CHUNK) {
            let mut q = QueryBuilder::new($statement);
            let mut list = q.separated(", ");
            for $value in chunk {
                list.push_bind($bind);
            }
            q.push(")").build().execute(&mut *$tx).await.map_err(query_err($doing))?;
        }
    };
}

impl Store {
    /// Commits one batch of broker state changes in one transaction.
    pub async fn write_broker_state(&self, batch: &StateBatch) -> Result<(), StoreError> {
        let dialect = self.dialect();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a broker state transaction"))?;
            for table in ["mqtt_sessions", "mqtt_subscriptions", "mqtt_queue", "mqtt_inbound_qos2"] {
                let statement = format!("DELETE FROM {table} WHERE client_id IN (");
                in_list!(tx, &statement, batch.dropped_sessions, |c| c.as_str(), "dropping sessions");
            }
            for chunk in batch.sessions.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO mqtt_sessions (client_id, username, offline_since, expiry_secs) ");
                q.push_values(chunk, |mut row, s| {
                    row.push_bind(s.client_id.as_str()).push_bind(s.username.as_deref()).push_bind(s.offline_since).push_bind(s.expiry_secs);
                });
                q.push(upsert_tail(dialect, "client_id", &["username", "offline_since", "expiry_secs"]));
                q.build().execute(&mut *tx).await.map_err(query_err("storing sessions"))?;
            }
            for (client_id, at, expiry_secs) in &batch.closed_sessions {
                QueryBuilder::new("UPDATE mqtt_sessions SET offline_since = ")
                    .push_bind(*at)
                    .push(", expiry_secs = ")
                    .push_bind(*expiry_secs)
                    .push(" WHERE client_id = ")
                    .push_bind(client_id.as_str())
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("closing sessions"))?;
            }
            for chunk in batch.subscribed.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO mqtt_subscriptions (client_id, filter, qos, options) ");
                q.push_values(chunk, |mut row, s| {
                    row.push_bind(s.client_id.as_str()).push_bind(s.filter.as_str()).push_bind(i16::from(s.qos)).push_bind(s.options);
                });
                q.push(upsert_tail(dialect, "client_id, filter", &["qos", "options"]));
                q.build().execute(&mut *tx).await.map_err(query_err("storing subscriptions"))?;
            }
            for (client_id, filter) in &batch.unsubscribed {
                QueryBuilder::new("DELETE FROM mqtt_subscriptions WHERE client_id = ")
                    .push_bind(client_id.as_str())
                    .push(" AND filter = ")
                    .push_bind(filter.as_str())
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("removing subscriptions"))?;
            }
            for chunk in batch.queued.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO mqtt_queue (seq, client_id, topic, payload, qos, packet_id, released, properties) ");
                q.push_values(chunk, |mut row, m| {
                    row.push_bind(m.seq)
                        .push_bind(m.client_id.as_str())
                        .push_bind(m.message.topic.as_str())
                        .push_bind(m.message.payload.as_slice())
                        .push_bind(i16::from(m.message.qos))
                        .push_bind(m.packet_id.map(i32::from))
                        .push_bind(i16::from(m.released))
                        .push_bind(m.message.properties.as_deref());
                });
                q.build().execute(&mut *tx).await.map_err(query_err("queueing messages"))?;
            }
            for (seq, packet_id) in &batch.sent {
                QueryBuilder::new("UPDATE mqtt_queue SET packet_id = ")
                    .push_bind(i32::from(*packet_id))
                    .push(" WHERE seq = ")
                    .push_bind(*seq)
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("recording sent messages"))?;
            }
            in_list!(tx, "UPDATE mqtt_queue SET released = 1 WHERE seq IN (", batch.released, |seq| *seq, "recording released messages");
            in_list!(tx, "DELETE FROM mqtt_queue WHERE seq IN (", batch.delivered, |seq| *seq, "removing delivered messages");
            for chunk in batch.inbound_received.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO mqtt_inbound_qos2 (client_id, packet_id) ");
                q.push_values(chunk, |mut row, (client_id, packet_id)| {
                    row.push_bind(client_id.as_str()).push_bind(i32::from(*packet_id));
                });
                q.push(upsert_tail(dialect, "client_id, packet_id", &["packet_id"]));
                q.build().execute(&mut *tx).await.map_err(query_err("storing incoming QoS 2 ids"))?;
            }
            for (client_id, packet_id) in &batch.inbound_released {
                QueryBuilder::new("DELETE FROM mqtt_inbound_qos2 WHERE client_id = ")
                    .push_bind(client_id.as_str())
                    .push(" AND packet_id = ")
                    .push_bind(i32::from(*packet_id))
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("releasing incoming QoS 2 ids"))?;
            }
            for chunk in batch.retained.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO retained (topic, payload, qos, properties) ");
                q.push_values(chunk, |mut row, m| {
                    row.push_bind(m.topic.as_str()).push_bind(m.payload.as_slice()).push_bind(i16::from(m.qos)).push_bind(m.properties.as_deref());
                });
                q.push(upsert_tail(dialect, "topic", &["payload", "qos", "properties"]));
                q.build().execute(&mut *tx).await.map_err(query_err("storing retained messages"))?;
            }
            in_list!(tx, "DELETE FROM retained WHERE topic IN (", batch.retained_cleared, |t| t.as_str(), "clearing retained messages");
            for chunk in batch.wills.chunks(CHUNK) {
                let mut q = QueryBuilder::new("INSERT INTO mqtt_wills (client_id, username, topic, payload, qos, retain, properties) ");
                q.push_values(chunk, |mut row, w| {
                    row.push_bind(w.client_id.as_str())
                        .push_bind(w.username.as_deref())
                        .push_bind(w.message.topic.as_str())
                        .push_bind(w.message.payload.as_slice())
                        .push_bind(i16::from(w.message.qos))
                        .push_bind(i16::from(w.message.retain))
                        .push_bind(w.message.properties.as_deref());
                });
                q.push(upsert_tail(dialect, "client_id", &["username", "topic", "payload", "qos", "retain", "properties"]));
                q.build().execute(&mut *tx).await.map_err(query_err("storing wills"))?;
            }
            in_list!(tx, "DELETE FROM mqtt_wills WHERE client_id IN (", batch.wills_cleared, |c| c.as_str(), "clearing wills");
            tx.commit().await.map_err(query_err("committing broker state"))
        })
    }

    /// Reads the whole broker state back (at start).
    pub async fn load_broker_state(&self) -> Result<StoredBrokerState, StoreError> {
        let doing = "loading broker state";
        // MariaDB/MySQL report binary-collated text as bytes: read it back as text.
        let text = |column: &str| match self.dialect() {
            Dialect::MySql => format!("CONVERT({column} USING utf8mb4)"),
            Dialect::Sqlite | Dialect::Postgres => column.to_owned(),
        };
        let (topic, client_id, filter) = (text("topic"), text("client_id"), text("filter"));
        let select_retained = format!("SELECT {topic}, payload, qos, properties FROM retained");
        let select_sessions = format!("SELECT {client_id}, {}, offline_since, expiry_secs FROM mqtt_sessions", text("username"));
        let select_subscriptions = format!("SELECT {client_id}, {filter}, qos, options FROM mqtt_subscriptions");
        let select_queue =
            format!("SELECT seq, {client_id}, {topic}, payload, qos, packet_id, released, properties FROM mqtt_queue ORDER BY seq");
        let select_inbound = format!("SELECT {client_id}, packet_id FROM mqtt_inbound_qos2");
        let select_wills = format!("SELECT {client_id}, {}, {topic}, payload, qos, retain, properties FROM mqtt_wills", text("username"));
        on_pool!(self, pool => {
            let retained = fetch_each(sqlx::query(&select_retained).fetch(pool), doing, |r| {
                Ok(StoredMessage {
                    topic: r.try_get(0)?,
                    payload: r.try_get(1)?,
                    qos: qos(r.try_get(2)?),
                    retain: true,
                    properties: r.try_get(3)?,
                })
            }).await?;
            let sessions = fetch_each(sqlx::query(&select_sessions).fetch(pool), doing, |r| {
                Ok(SessionRow { client_id: r.try_get(0)?, username: r.try_get(1)?, offline_since: r.try_get(2)?, expiry_secs: r.try_get(3)? })
            }).await?;
            let subscriptions = fetch_each(sqlx::query(&select_subscriptions).fetch(pool), doing, |r| {
                Ok(SubscriptionRow { client_id: r.try_get(0)?, filter: r.try_get(1)?, qos: qos(r.try_get(2)?), options: r.try_get(3)? })
            }).await?;
            let queue = fetch_each(sqlx::query(&select_queue).fetch(pool), doing, |r| {
                Ok(QueueRow {
                    seq: r.try_get(0)?,
                    client_id: r.try_get(1)?,
                    message: StoredMessage {
                        topic: r.try_get(2)?,
                        payload: r.try_get(3)?,
                        qos: qos(r.try_get(4)?),
                        retain: false,
                        properties: r.try_get(7)?,
                    },
                    packet_id: r.try_get::<Option<i32>, _>(5)?.map(packet_id),
                    released: r.try_get::<i16, _>(6)? != 0,
                })
            }).await?;
            let inbound_qos2 = fetch_each(sqlx::query(&select_inbound).fetch(pool), doing, |r| Ok((r.try_get(0)?, packet_id(r.try_get(1)?)))).await?;
            let wills = fetch_each(sqlx::query(&select_wills).fetch(pool), doing, |r| {
                Ok(WillRow {
                    client_id: r.try_get(0)?,
                    username: r.try_get(1)?,
                    message: StoredMessage {
                        topic: r.try_get(2)?,
                        payload: r.try_get(3)?,
                        qos: qos(r.try_get(4)?),
                        retain: r.try_get::<i16, _>(5)? != 0,
                        properties: r.try_get(6)?,
                    },
                })
            }).await?;
            Ok(StoredBrokerState { retained, sessions, subscriptions, queue, inbound_qos2, wills })
        })
    }

    /// The highest message number in the queue: numbering goes on from there after a restart.
    /// (A number is only a row's key: one reused after its row was deleted is harmless.)
    pub async fn last_message_seq(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT MAX(seq) FROM mqtt_queue").fetch_one(pool).await.map_err(query_err("reading the last message number"))?;
            let queued: Option<i64> = row.try_get(0).map_err(query_err("reading the last message number"))?;
            Ok(queued.unwrap_or(0))
        })
    }
}

/// Decodes rows as they arrive (a million retained messages are never all in memory twice).
async fn fetch_each<R, T>(
    mut rows: BoxStream<'_, Result<R, sqlx::Error>>,
    doing: &'static str,
    decode: impl Fn(&R) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(query_err(doing))? {
        out.push(decode(&row).map_err(query_err(doing))?);
    }
    Ok(out)
}

/// A QoS column: 0, 1 or 2 (anything else is read as 2, the safest).
fn qos(stored: i16) -> u8 {
    stored.clamp(0, 2) as u8
}

/// A packet id column (1..=65535).
fn packet_id(stored: i32) -> u16 {
    stored.clamp(1, i32::from(u16::MAX)) as u16
}
