//! An application message as routed between sessions.

use bytes::Bytes;
use mqtt_codec::{Properties, Property, QoS, TopicName};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// What an MQTT 5.0 publisher sent with it; `None` from a 3.1.1 publisher (and inside the
    /// server). Boxed: most messages have none.
    pub properties: Option<Box<MessageProperties>>,
}

/// The properties of a PUBLISH that travel with its message to subscribers [MQTT-3.3.2-4,
/// -15, -17, -18], and its expiry [MQTT-3.3.2-5].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// Payload format indicator, content type, response topic, correlation data and user
    /// properties, in the order the publisher sent them.
    pub forwarded: Properties,
    /// When the message expires (Unix milliseconds): it is not delivered after that, and what
    /// is left of its interval is sent with it.
    pub expires_at_ms: Option<i64>,
}

impl MessageProperties {
    /// The properties of a received PUBLISH (or will) worth keeping, `None` if there are none.
    /// `now_ms` starts the message expiry interval.
    pub fn from_publish(properties: &Properties, now_ms: i64) -> Option<Box<Self>> {
        let mut kept = Self::default();
        for property in &properties.0 {
            match property {
                Property::MessageExpiryInterval(seconds) => kept.expires_at_ms = Some(now_ms + i64::from(*seconds) * 1000),
                Property::PayloadFormatIndicator(_)
                | Property::ContentType(_)
                | Property::ResponseTopic(_)
                | Property::CorrelationData(_)
                | Property::UserProperty(..) => kept.forwarded.0.push(property.clone()),
                // Topic alias and subscription identifiers belong to one hop; anything else is
                // not a PUBLISH property (the decoder accepted it; it is dropped here).
                _ => {}
            }
        }
        if kept.forwarded.is_empty() && kept.expires_at_ms.is_none() {
            None
        } else {
            Some(Box::new(kept))
        }
    }

    /// Whether the message expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The seconds left of the expiry interval, rounded up, for a forwarded copy [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now_ms: i64) -> Option<u32> {
        self.expires_at_ms.map(|at| u32::try_from(((at - now_ms).max(0) + 999) / 1000).unwrap_or(u32::MAX))
    }
}

impl Message {
    /// A message without 5.0 properties.
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self { topic, payload, qos, retain, properties: None }
    }

    /// Whether the message's expiry interval has passed [MQTT-3.3.2-5].
    pub fn expired(&self, now_ms: i64) -> bool {
        self.properties.as_deref().is_some_and(|p| p.expired(now_ms))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("properties", &self.properties)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [MQTT-3.3.2-4, -6] forwarded properties kept in order; the expiry interval counted from
    /// receipt and sent on as what is left, rounded up.
    #[test]
    fn publish_properties_keep_what_travels_and_count_expiry_down() {
        let sent = Properties(vec![
            Property::UserProperty("a".into(), "1".into()),
            Property::TopicAlias(3),
            Property::MessageExpiryInterval(10),
            Property::ContentType("text/plain".into()),
            Property::UserProperty("a".into(), "2".into()),
        ]);
        let kept = MessageProperties::from_publish(&sent, 1_000).unwrap();
        assert_eq!(
            kept.forwarded.0,
            [
                Property::UserProperty("a".into(), "1".into()),
                Property::ContentType("text/plain".into()),
                Property::UserProperty("a".into(), "2".into())
            ]
        );
        assert_eq!(kept.remaining_expiry(1_000), Some(10));
        assert_eq!(kept.remaining_expiry(9_001), Some(2), "1.999 s left: rounded up");
        assert_eq!(kept.remaining_expiry(10_001), Some(1));
        assert!(!kept.expired(10_999));
        assert!(kept.expired(11_000));
        assert!(MessageProperties::from_publish(&Properties(vec![Property::TopicAlias(1)]), 0).is_none());
    }
}
