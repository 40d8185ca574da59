//! What one subscription asks for, and shared subscriptions (`$share/<group>/<filter>`): each
//! message matching a shared subscription goes to one of its members, not to all.
//!
//! Distribution: round robin over the members, skipping a member that is offline or still
//! has QoS 1/2 messages waiting in its queue (its in-flight window is full, or it is slow);
//! if every member is skipped, the next online member in turn gets it, and with none online
//! the next member in turn (a persistent session, which gets it when it reconnects). A member
//! whose connection ends hands its unacknowledged shared messages to another member (see
//! `Router::redeliver_shared`).

use super::mailbox::Mailbox;
use mqtt_codec::{QoS, TopicFilter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The options of one subscription (MQTT 5.0 §3.8.3.1; a 3.1.1 subscription has only `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The maximum QoS granted.
    pub qos: QoS,
    /// Do not send the session's own publishes back to it [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Forward the retain flag as published instead of clearing it [MQTT-3.3.1-12, -13].
    pub retain_as_published: bool,
    /// Sent with every message delivered through this subscription [MQTT-3.3.4-3].
    pub id: Option<NonZeroU32>,
}

impl Subscription {
    /// A 3.1.1 subscription (and a 5.0 one with default options).
    pub fn qos(qos: QoS) -> Self {
        Self { qos, no_local: false, retain_as_published: false, id: None }
    }
}

/// A subscription in the router: where to deliver and how.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub mailbox: Arc<Mailbox>,
    pub options: Subscription,
}

/// `$share/<group>/<filter>` split into its group and the filter it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFilter {
    pub group: String,
    pub filter: TopicFilter,
}

impl SharedFilter {
    /// `None` for an ordinary filter; `Some(Err)` for a malformed shared one: an empty group
    /// or one with a wildcard, or no filter after it [MQTT-4.8.2-1, -2].
    pub fn parse(filter: &TopicFilter) -> Option<Result<Self, &'static str>> {
        let rest = filter.as_str().strip_prefix("$share/")?;
        let Some((group, inner)) = rest.split_once('/') else {
            return Some(Err("a shared subscription needs a filter after its group"));
        };
        if group.is_empty() || group.contains(['+', '#']) {
            return Some(Err("a share name must be non-empty and without wildcards"));
        }
        Some(match TopicFilter::parse(inner) {
            Ok(filter) => Ok(Self { group: group.to_owned(), filter }),
            Err(_) => Err("the filter of a shared subscription is not a valid topic filter"),
        })
    }
}

/// One shared subscription: the members of a group on one filter.
#[derive(Debug)]
pub struct SharedSubscription {
    pub filter: TopicFilter,
    pub members: Vec<(u64, Subscriber)>,
    next: AtomicUsize,
}

impl SharedSubscription {
    pub fn new(filter: TopicFilter) -> Self {
        Self { filter, members: Vec::new(), next: AtomicUsize::new(0) }
    }

    /// The member that gets the next message, never `exclude`; `None` without another member.
    pub fn pick(&self, exclude: Option<u64>) -> Option<&(u64, Subscriber)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.load(Ordering::Relaxed) % n;
        let in_turn = || (0..n).map(move |i| (start + i) % n).filter(move |&i| Some(self.members[i].0) != exclude);
        let mailbox = |i: usize| &self.members[i].1.mailbox;
        let chosen = in_turn()
            .find(|&i| mailbox(i).ready_for_more())
            .or_else(|| in_turn().find(|&i| mailbox(i).is_online()))
            .or_else(|| in_turn().next())?;
        // Racing publishers may pick the same member once: harmless, the turn moves on.
        self.next.store(chosen + 1, Ordering::Relaxed);
        Some(&self.members[chosen])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Result<SharedFilter, &'static str>> {
        SharedFilter::parse(&TopicFilter::parse(s).unwrap())
    }

    /// [MQTT-4.8.2-1, -2] `$share/{ShareName}/{filter}`: a non-empty share name without
    /// wildcards, then a valid filter.
    #[test]
    fn shared_filters_parse_their_group_and_filter() {
        assert_eq!(parse("iot/#"), None);
        let shared = parse("$share/g1/iot/+/temp").unwrap().unwrap();
        assert_eq!((shared.group.as_str(), shared.filter.as_str()), ("g1", "iot/+/temp"));
        assert!(parse("$share/g1").unwrap().is_err());
        assert!(parse("$share//iot").unwrap().is_err());
        assert!(parse("$share/+/iot").unwrap().is_err());
    }

    fn member(id: u64, online: bool) -> (u64, Subscriber) {
        let mailbox = Arc::new(Mailbox::new(10, 10));
        mailbox.set_online(online);
        (id, Subscriber { mailbox, options: Subscription::qos(QoS::AtLeastOnce) })
    }

    #[test]
    fn members_take_turns_and_offline_ones_are_skipped() {
        let mut shared = SharedSubscription::new(TopicFilter::parse("t").unwrap());
        shared.members = vec![member(1, true), member(2, false), member(3, true)];
        let picks: Vec<u64> = (0..6).map(|_| shared.pick(None).unwrap().0).collect();
        assert!(!picks.contains(&2), "offline member skipped while others are online: {picks:?}");
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), picks.iter().filter(|&&p| p == 3).count());
        assert_eq!(shared.pick(Some(1)).unwrap().0, 3, "redelivery never goes back to the member that left");
        shared.members.truncate(1);
        assert!(shared.pick(Some(1)).is_none());
    }
}
