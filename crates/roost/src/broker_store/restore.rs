//! Reads the stored broker state back into what the broker starts from.

use super::rows::{message_properties, subscription};
use crate::broker::{Message, MessageSeq, RestoredMessage, RestoredSession, RestoredState, RestoredWill};
use crate::store::{Store, StoreError, StoredMessage};
use mqtt_codec::{PacketId, QoS, TopicFilter, TopicName};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use tracing::warn;

/// A stored message as the broker routes it; `None` (logged) if its topic is not valid.
/// Properties that cannot be read back are dropped (logged), the message is kept.
fn message(stored: StoredMessage) -> Option<Message> {
    let properties = stored.properties.as_deref().and_then(|column| match message_properties(column) {
        Ok(properties) => Some(Box::new(properties)),
        Err(e) => {
            warn!(topic = %stored.topic, error = %e, "stored message properties unreadable; the message is kept without them");
            None
        }
    });
    match TopicName::parse(&stored.topic) {
        Ok(topic) => Some(Message {
            topic,
            payload: stored.payload.into(),
            qos: QoS::from_u8(stored.qos).unwrap_or(QoS::ExactlyOnce),
            retain: stored.retain,
            properties,
        }),
        Err(e) => {
            warn!(topic = %stored.topic, error = %e, "stored message with an invalid topic; skipped");
            None
        }
    }
}

/// Loads everything the broker had when it stopped. Rows that cannot be valid MQTT (edited by
/// hand) are skipped with a warning, never fatal.
pub async fn restore(store: &Store) -> Result<RestoredState, StoreError> {
    let stored = store.load_broker_state().await?;
    let last_seq = store.last_message_seq().await?;
    let retained = stored.retained.into_iter().filter_map(message).collect();
    let mut sessions: HashMap<String, RestoredSession> = stored
        .sessions
        .into_iter()
        .map(|row| {
            let session = RestoredSession {
                client_id: Arc::from(row.client_id.as_str()),
                username: row.username.as_deref().map(Arc::from),
                offline_since_ms: row.offline_since,
                expiry: row.expiry_secs.and_then(|s| u64::try_from(s).ok()).map(std::time::Duration::from_secs),
                subscriptions: Vec::new(),
                messages: Vec::new(),
                inbound_qos2: Vec::new(),
            };
            (row.client_id, session)
        })
        .collect();
    for row in stored.subscriptions {
        let (Some(session), Ok(filter)) = (sessions.get_mut(&row.client_id), TopicFilter::parse(&row.filter)) else {
            warn!(client_id = %row.client_id, filter = %row.filter, "stored subscription without a session or with an invalid filter; skipped");
            continue;
        };
        session.subscriptions.push((filter, subscription(QoS::from_u8(row.qos).unwrap_or(QoS::ExactlyOnce), row.options)));
    }
    for row in stored.queue {
        let Some(session) = sessions.get_mut(&row.client_id) else { continue };
        let Some(seq) = u64::try_from(row.seq).ok().and_then(NonZeroU64::new) else { continue };
        let qos = QoS::from_u8(row.message.qos).unwrap_or(QoS::ExactlyOnce);
        let Some(message) = message(row.message) else { continue };
        session.messages.push(RestoredMessage {
            seq: MessageSeq(seq),
            message: Arc::new(message),
            qos,
            packet_id: row.packet_id.and_then(PacketId::new),
            released: row.released,
        });
    }
    for (client_id, packet_id) in stored.inbound_qos2 {
        if let (Some(session), Some(id)) = (sessions.get_mut(&client_id), PacketId::new(packet_id)) {
            session.inbound_qos2.push(id);
        }
    }
    let wills = stored
        .wills
        .into_iter()
        .filter_map(|row| {
            let will = message(row.message)?;
            Some(RestoredWill { client_id: Arc::from(row.client_id.as_str()), username: row.username.as_deref().map(Arc::from), will })
        })
        .collect();
    let mut sessions: Vec<RestoredSession> = sessions.into_values().collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(RestoredState { retained, sessions, wills, last_seq: u64::try_from(last_seq).unwrap_or(0) })
}
