//! What an MQTT 5.0 connection agrees on at CONNECT (§3.1.2.11, §3.2.2.3): the client's limits
//! the server must respect, the server's own limits and capabilities it announces, and the
//! topic aliases both ways.

use crate::broker::BrokerConfig;
use mqtt_codec::{Connect, Properties, Property, TopicName};
use std::collections::HashMap;
use std::time::Duration;

/// 5.0 reason codes the broker sends (MQTT 5.0 §2.4).
pub mod reason {
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
}

/// A CONNECT the server refuses, with its CONNACK reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u8,
    pub why: &'static str,
}

/// The state of one 5.0 connection beyond 3.1.1's.
#[derive(Debug)]
pub struct V5 {
    /// How many QoS 1/2 messages the client takes unacknowledged [MQTT-3.3.4-9].
    pub client_receive_maximum: u16,
    /// The largest packet the client takes [MQTT-3.1.2-24]; larger messages are dropped
    /// [MQTT-3.1.2-25].
    pub client_maximum_packet_size: usize,
    /// Reason strings and user properties on acknowledgements only if the client asked
    /// (request problem information, default 1) [MQTT-3.1.2-29].
    pub problem_information: bool,
    /// The session expiry interval agreed (seconds; 0: the session ends with the connection).
    pub session_expiry: u32,
    /// The one the CONNECT asked for: a DISCONNECT may not set one if it was 0 (§3.14.2.2.2).
    requested_session_expiry: u32,
    /// QoS 2 packet ids received on this connection and not yet released: with the PUBACKs
    /// waiting, what counts against the server's receive maximum (§4.9: per connection).
    pub unreleased_qos2: std::collections::BTreeSet<mqtt_codec::PacketId>,
    /// Will delay interval (seconds) [MQTT-3.1.3-9].
    pub will_delay: u32,
    /// Topic aliases the client set (index = alias - 1) [MQTT-3.3.2-7 .. -12]; grown as
    /// aliases are set (most clients set none), up to the server's topic alias maximum.
    inbound_aliases: Vec<Option<TopicName>>,
    inbound_alias_maximum: u16,
    /// Topic aliases the server set for the client, up to its topic alias maximum.
    outbound_aliases: HashMap<TopicName, u16>,
    client_topic_alias_maximum: u16,
}

/// What the server announces and accepts on 5.0 connections.
pub fn server_receive_maximum(config: &BrokerConfig) -> u16 {
    u16::try_from(config.max_pending_acks).unwrap_or(u16::MAX).max(1)
}

impl V5 {
    /// Reads the CONNECT's properties; a refusal for what the server cannot accept.
    pub fn negotiate(connect: &Connect, config: &BrokerConfig) -> Result<Self, Refusal> {
        let mut v5 = Self {
            client_receive_maximum: u16::MAX,
            client_maximum_packet_size: usize::MAX,
            problem_information: true,
            session_expiry: 0,
            requested_session_expiry: 0,
            unreleased_qos2: Default::default(),
            will_delay: 0,
            inbound_aliases: Vec::new(),
            inbound_alias_maximum: config.topic_alias_maximum,
            outbound_aliases: HashMap::new(),
            client_topic_alias_maximum: 0,
        };
        let protocol_error = |why| Err(Refusal { code: reason::PROTOCOL_ERROR, why });
        for property in &connect.properties.0 {
            match *property {
                Property::SessionExpiryInterval(seconds) => v5.session_expiry = seconds,
                // Zero is a protocol error for both (§3.1.2.11.3, §3.1.2.11.4).
                Property::ReceiveMaximum(0) => return protocol_error("receive maximum 0"),
                Property::ReceiveMaximum(n) => v5.client_receive_maximum = n,
                Property::MaximumPacketSize(0) => return protocol_error("maximum packet size 0"),
                Property::MaximumPacketSize(n) => v5.client_maximum_packet_size = n as usize,
                Property::TopicAliasMaximum(n) => v5.client_topic_alias_maximum = n,
                Property::RequestProblemInformation(n) => v5.problem_information = n != 0,
                // Enhanced authentication is not offered: refuse every method [MQTT-4.12.0-1].
                Property::AuthenticationMethod(_) => {
                    return Err(Refusal { code: reason::BAD_AUTHENTICATION_METHOD, why: "no enhanced authentication method is supported" })
                }
                _ => {}
            }
        }
        let cap = u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX);
        v5.requested_session_expiry = v5.session_expiry;
        v5.session_expiry = v5.session_expiry.min(cap);
        if let Some(will) = &connect.will {
            for property in &will.properties.0 {
                if let Property::WillDelayInterval(seconds) = *property {
                    v5.will_delay = seconds;
                }
            }
        }
        Ok(v5)
    }

    /// The CONNACK's properties: the server's limits and capabilities (§3.2.2.3), what it
    /// changed of the client's request, and the client id it assigned.
    pub fn connack_properties(
        &self,
        connect: &Connect,
        assigned: Option<&str>,
        server_keep_alive: Option<u16>,
        config: &BrokerConfig,
    ) -> Properties {
        let mut props = vec![
            Property::ReceiveMaximum(server_receive_maximum(config)),
            Property::TopicAliasMaximum(config.topic_alias_maximum),
            Property::RetainAvailable(1),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
        ];
        if let Ok(size) = u32::try_from(config.max_packet_size) {
            props.push(Property::MaximumPacketSize(size));
        }
        let asked = connect.properties.0.iter().find_map(|p| match p {
            Property::SessionExpiryInterval(s) => Some(*s),
            _ => None,
        });
        if asked.unwrap_or(0) != self.session_expiry {
            // §3.2.2.3.2: the client uses the server's value when one is sent.
            props.push(Property::SessionExpiryInterval(self.session_expiry));
        }
        if let Some(id) = assigned {
            props.push(Property::AssignedClientIdentifier(id.to_owned()));
        }
        if let Some(seconds) = server_keep_alive {
            props.push(Property::ServerKeepAlive(seconds));
        }
        Properties(props)
    }

    /// The topic of an incoming PUBLISH, resolving and setting topic aliases [MQTT-3.3.2-7 ..
    /// -12]. `Err` carries the DISCONNECT reason code.
    pub fn resolve_topic(&mut self, topic: Option<TopicName>, properties: &Properties) -> Result<TopicName, (u8, &'static str)> {
        let alias = properties.0.iter().find_map(|p| match p {
            Property::TopicAlias(a) => Some(*a),
            _ => None,
        });
        let Some(alias) = alias else {
            return topic.ok_or((reason::PROTOCOL_ERROR, "PUBLISH without a topic or a topic alias"));
        };
        if alias == 0 || alias > self.inbound_alias_maximum {
            return Err((reason::TOPIC_ALIAS_INVALID, "topic alias 0 or over the topic alias maximum"));
        }
        let index = usize::from(alias) - 1;
        if index >= self.inbound_aliases.len() {
            if topic.is_none() {
                return Err((reason::PROTOCOL_ERROR, "topic alias not set on this connection"));
            }
            self.inbound_aliases.resize(index + 1, None);
        }
        let slot = &mut self.inbound_aliases[index];
        match topic {
            Some(topic) => {
                *slot = Some(topic.clone());
                Ok(topic)
            }
            None => slot.clone().ok_or((reason::PROTOCOL_ERROR, "topic alias not set on this connection")),
        }
    }

    /// The alias to send `topic` with, and whether it is new (the PUBLISH sets it: the topic
    /// is sent too, and the alias is kept with [`V5::remember_alias`] once the packet is sure
    /// to be sent). `None`: no alias (the client takes none, or all are used).
    pub fn outbound_alias(&self, topic: &TopicName) -> Option<(u16, bool)> {
        if let Some(&alias) = self.outbound_aliases.get(topic) {
            return Some((alias, false));
        }
        let next = u16::try_from(self.outbound_aliases.len() + 1).ok()?;
        (next <= self.client_topic_alias_maximum).then_some((next, true))
    }

    /// Keeps the new alias `alias` for `topic` (a PUBLISH setting it is being sent).
    pub fn remember_alias(&mut self, topic: &TopicName, alias: u16) {
        self.outbound_aliases.insert(topic.clone(), alias);
    }

    /// Keeps what the client sent in its DISCONNECT: a new session expiry interval. Setting
    /// one when the CONNECT had 0 is a protocol error (§3.14.2.2.2).
    pub fn update_session_expiry(&mut self, properties: &Properties, config: &BrokerConfig) -> Result<(), &'static str> {
        for property in &properties.0 {
            if let Property::SessionExpiryInterval(seconds) = *property {
                if self.requested_session_expiry == 0 && seconds != 0 {
                    return Err("a session expiry interval set at DISCONNECT when the CONNECT had 0 (§3.14.2.2.2)");
                }
                let cap = u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX);
                self.session_expiry = seconds.min(cap);
            }
        }
        Ok(())
    }

    /// How long the session outlives its connection.
    pub fn session_expiry(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_expiry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::{LastWill, ProtocolVersion, QoS};

    fn connect(properties: Vec<Property>) -> Connect {
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: Duration::from_secs(30),
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties(properties),
        }
    }

    fn topic(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }

    fn alias(a: u16) -> Properties {
        Properties(vec![Property::TopicAlias(a)])
    }

    /// [MQTT-3.3.2-8, -9, -10] an alias is set with a topic, used without one, refused when 0
    /// or over the maximum, and unknown aliases are a protocol error.
    #[test]
    fn inbound_topic_aliases() {
        let config = BrokerConfig { topic_alias_maximum: 2, ..Default::default() };
        let mut v5 = V5::negotiate(&connect(vec![]), &config).unwrap();
        assert_eq!(v5.resolve_topic(None, &alias(1)).unwrap_err().0, reason::PROTOCOL_ERROR);
        assert_eq!(v5.resolve_topic(Some(topic("a/b")), &alias(1)).unwrap(), topic("a/b"));
        assert_eq!(v5.resolve_topic(None, &alias(1)).unwrap(), topic("a/b"));
        assert_eq!(v5.resolve_topic(Some(topic("c")), &alias(1)).unwrap(), topic("c"), "an alias can be set again");
        assert_eq!(v5.resolve_topic(None, &alias(1)).unwrap(), topic("c"));
        assert_eq!(v5.resolve_topic(Some(topic("c")), &alias(0)).unwrap_err().0, reason::TOPIC_ALIAS_INVALID);
        assert_eq!(v5.resolve_topic(Some(topic("c")), &alias(3)).unwrap_err().0, reason::TOPIC_ALIAS_INVALID);
        assert_eq!(v5.resolve_topic(None, &Properties::default()).unwrap_err().0, reason::PROTOCOL_ERROR);
    }

    /// [MQTT-3.1.2-26, -27] the server uses at most the client's topic alias maximum, none
    /// without one.
    #[test]
    fn outbound_aliases_stay_within_the_client_maximum() {
        let mut v5 = V5::negotiate(&connect(vec![Property::TopicAliasMaximum(1)]), &BrokerConfig::default()).unwrap();
        assert_eq!(v5.outbound_alias(&topic("a")), Some((1, true)));
        assert_eq!(v5.outbound_alias(&topic("a")), Some((1, true)), "not kept until remembered");
        v5.remember_alias(&topic("a"), 1);
        assert_eq!(v5.outbound_alias(&topic("a")), Some((1, false)));
        assert_eq!(v5.outbound_alias(&topic("b")), None);
        let none = V5::negotiate(&connect(vec![]), &BrokerConfig::default()).unwrap();
        assert_eq!(none.outbound_alias(&topic("a")), None, "no aliases unless the client allows them");
    }

    #[test]
    fn connect_properties_are_validated_and_capped() {
        let config = BrokerConfig { session_expiry: Duration::from_secs(100), ..Default::default() };
        assert_eq!(V5::negotiate(&connect(vec![Property::ReceiveMaximum(0)]), &config).unwrap_err().code, reason::PROTOCOL_ERROR);
        assert_eq!(V5::negotiate(&connect(vec![Property::MaximumPacketSize(0)]), &config).unwrap_err().code, reason::PROTOCOL_ERROR);
        let auth = connect(vec![Property::AuthenticationMethod("SCRAM-SHA-1".into())]);
        assert_eq!(V5::negotiate(&auth, &config).unwrap_err().code, reason::BAD_AUTHENTICATION_METHOD);
        let mut with_will = connect(vec![Property::SessionExpiryInterval(u32::MAX)]);
        with_will.will = Some(LastWill {
            topic: topic("w"),
            payload: Default::default(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties(vec![Property::WillDelayInterval(7)]),
        });
        let v5 = V5::negotiate(&with_will, &config).unwrap();
        assert_eq!((v5.session_expiry, v5.will_delay), (100, 7));
        let props = v5.connack_properties(&with_will, Some("auto-1"), None, &config);
        assert!(props.0.contains(&Property::SessionExpiryInterval(100)), "the capped interval is announced");
        assert!(props.0.contains(&Property::AssignedClientIdentifier("auto-1".into())));
    }

    #[test]
    fn a_session_expiry_set_only_at_disconnect_is_a_protocol_error() {
        let config = BrokerConfig::default();
        let mut v5 = V5::negotiate(&connect(vec![]), &config).unwrap();
        assert!(v5.update_session_expiry(&Properties(vec![Property::SessionExpiryInterval(5)]), &config).is_err());
        let mut v5 = V5::negotiate(&connect(vec![Property::SessionExpiryInterval(1)]), &config).unwrap();
        v5.update_session_expiry(&Properties(vec![Property::SessionExpiryInterval(0)]), &config).unwrap();
        assert_eq!(v5.session_expiry, 0);
        // Asked for 10 s, capped to 0 by the server: a DISCONNECT may still set one.
        let no_keeping = BrokerConfig { session_expiry: Duration::ZERO, ..config };
        let mut v5 = V5::negotiate(&connect(vec![Property::SessionExpiryInterval(10)]), &no_keeping).unwrap();
        assert_eq!(v5.session_expiry, 0);
        assert!(v5.update_session_expiry(&Properties(vec![Property::SessionExpiryInterval(5)]), &no_keeping).is_ok());
    }
}
