//! How MQTT 5.0 extras are kept in rows: a message's properties as one column, a
//! subscription's options as one number. Both ways live here, so they cannot drift apart.

use crate::broker::{MessageProperties, Subscription};
use mqtt_codec::{Properties, QoS};
use std::num::NonZeroU32;

/// No expiry, in the first eight bytes of a stored properties column.
const NO_EXPIRY: i64 = i64::MIN;

/// A message's properties as stored: its expiry (Unix ms, 8 bytes big-endian; `i64::MIN` for
/// none), then the properties as a PUBLISH carries them. `None` without properties.
pub fn properties_column(properties: Option<&MessageProperties>) -> Option<Vec<u8>> {
    let properties = properties?;
    let mut column = properties.expires_at_ms.unwrap_or(NO_EXPIRY).to_be_bytes().to_vec();
    // The properties came in a packet, so they fit in one: encoding them cannot fail.
    column.extend(properties.forwarded.to_bytes().unwrap_or_default());
    Some(column)
}

/// Reads back what [`properties_column`] wrote.
pub fn message_properties(column: &[u8]) -> Result<MessageProperties, String> {
    let (expiry, rest) = column.split_at_checked(8).ok_or("shorter than its expiry")?;
    let expiry = i64::from_be_bytes(expiry.try_into().map_err(|_| "expiry")?);
    let forwarded = Properties::from_bytes(rest).map_err(|e| e.to_string())?;
    Ok(MessageProperties { forwarded, expires_at_ms: (expiry != NO_EXPIRY).then_some(expiry) })
}

const NO_LOCAL: i64 = 1;
const RETAIN_AS_PUBLISHED: i64 = 2;

/// A subscription's 5.0 options as one number: bit 0 no local, bit 1 retain as published, its
/// identifier from bit 8. 0 for a 3.1.1 subscription.
pub fn options_column(subscription: &Subscription) -> i64 {
    let id = subscription.id.map_or(0, |id| i64::from(id.get()));
    id << 8 | if subscription.no_local { NO_LOCAL } else { 0 } | if subscription.retain_as_published { RETAIN_AS_PUBLISHED } else { 0 }
}

/// Reads back what [`options_column`] wrote.
pub fn subscription(qos: QoS, options: i64) -> Subscription {
    Subscription {
        qos,
        no_local: options & NO_LOCAL != 0,
        retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
        id: u32::try_from(options >> 8).ok().and_then(NonZeroU32::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::Property;

    #[test]
    fn properties_and_options_read_back_as_written() {
        let kept = MessageProperties {
            forwarded: Properties(vec![Property::UserProperty("a".into(), "1".into()), Property::ContentType("text/plain".into())]),
            expires_at_ms: Some(1_700_000_000_000),
        };
        assert_eq!(message_properties(&properties_column(Some(&kept)).unwrap()).unwrap(), kept);
        let no_expiry = MessageProperties { expires_at_ms: None, ..kept };
        assert_eq!(message_properties(&properties_column(Some(&no_expiry)).unwrap()).unwrap(), no_expiry);
        assert!(properties_column(None).is_none());
        assert!(message_properties(&[1, 2]).is_err());
        let options = Subscription { qos: QoS::AtLeastOnce, no_local: true, retain_as_published: true, id: NonZeroU32::new(268_435_455) };
        assert_eq!(subscription(QoS::AtLeastOnce, options_column(&options)), options);
        assert_eq!(options_column(&Subscription::qos(QoS::ExactlyOnce)), 0);
    }
}
