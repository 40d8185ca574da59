//! Who may publish and subscribe where. A device user owns `iot/{name}/#` (the topics of the
//! stack Roost replaces carry the owner); admins may use every topic; grants add filters. Pure.

use crate::store::UserRecord;

/// The root of the topics every user owns: `iot/{name}/#`.
pub const OWNER_ROOT: &str = "iot";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    admin: bool,
    /// `iot/{name}/#`.
    own: String,
    /// `roost/alerts/{name}/#`: the user's own alerts, to subscribe to.
    alerts: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Acl {
    pub fn for_user(user: &UserRecord) -> Self {
        let pick = |want: fn(&crate::store::Grant) -> bool| user.grants.iter().filter(|g| want(g)).map(|g| g.filter.clone()).collect();
        Self {
            admin: user.is_admin,
            own: format!("{OWNER_ROOT}/{}/#", user.name),
            alerts: format!("{}/{}/#", crate::alerts::TOPIC_ROOT, user.name),
            publish: pick(|g| g.publish),
            subscribe: pick(|g| g.subscribe),
        }
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.admin || covers(&self.own, topic) || self.publish.iter().any(|f| covers(f, topic))
    }

    /// A subscription is allowed only if everything it could match is allowed: `iot/+/#` is
    /// refused to a device user even though it would also match their own topics.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.admin || covers(&self.own, filter) || covers(&self.alerts, filter) || self.subscribe.iter().any(|f| covers(f, filter))
    }
}

/// Whether every topic `inner` (a topic name or a filter) matches is also matched by the filter
/// `outer`. With a plain topic name as `inner` this is "outer matches the topic". Wildcards in
/// the first level never match `$` topics [MQTT-4.7.2-1].
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    let mut first = true;
    loop {
        let dollar = first && inner.starts_with('$');
        first = false;
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return !dollar,
            (Some("+"), Some(level)) => {
                if level == "#" || dollar {
                    return false;
                }
            }
            (Some(o), Some(i)) => {
                if o != i {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Grant;
    use proptest::prelude::*;

    fn user(name: &str, admin: bool, grants: Vec<Grant>) -> Acl {
        Acl::for_user(&UserRecord {
            name: name.into(),
            password_hash: String::new(),
            is_admin: admin,
            created_at: crate::model::TimestampMs(0),
            grants,
        })
    }

    #[test]
    fn a_device_user_owns_its_iot_subtree_only() {
        let alice = user("alice", false, vec![]);
        assert!(alice.may_publish("iot/alice/sensor/livingroom/temperature"));
        assert!(alice.may_publish("iot/alice"));
        assert!(!alice.may_publish("iot/bob/sensor/livingroom/temperature"));
        assert!(!alice.may_publish("iot/alicex/sensor/a/b"));
        assert!(!alice.may_publish("home/alice"));
        assert!(alice.may_subscribe("iot/alice/#"));
        assert!(alice.may_subscribe("iot/alice/sensor/+/temperature"));
        assert!(!alice.may_subscribe("iot/+/sensor/#"), "would match other owners");
        assert!(!alice.may_subscribe("#"));
        assert!(!alice.may_subscribe("$SYS/#"));
        assert!(alice.may_subscribe("roost/alerts/alice/#"), "her own alert rules' states");
        assert!(!alice.may_publish("roost/alerts/alice/x"), "published by Roost only");
        assert!(!alice.may_subscribe("roost/alerts/+/#"));
    }

    #[test]
    fn admins_may_do_everything_and_grants_add_filters() {
        let admin = user("root", true, vec![]);
        assert!(admin.may_publish("iot/bob/x") && admin.may_subscribe("#") && admin.may_subscribe("$SYS/broker/#"));
        let carol = user(
            "carol",
            false,
            vec![
                Grant { filter: "home/+/cmd".into(), publish: true, subscribe: false },
                Grant { filter: "iot/shared/#".into(), publish: false, subscribe: true },
            ],
        );
        assert!(carol.may_publish("home/lamp/cmd") && !carol.may_subscribe("home/lamp/cmd"));
        assert!(carol.may_subscribe("iot/shared/sensor/+/humidity") && !carol.may_publish("iot/shared/x"));
    }

    #[test]
    fn wildcards_at_the_first_level_never_cover_dollar_topics() {
        assert!(!covers("#", "$SYS/broker/uptime"));
        assert!(!covers("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(covers("$SYS/#", "$SYS/broker/uptime"));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("+".to_owned())]
    }

    fn filter() -> impl Strategy<Value = String> {
        (proptest::collection::vec(level(), 1..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".into());
            }
            levels.join("/")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        /// `covers` on topic names agrees with the codec's reference matcher.
        #[test]
        fn covers_a_topic_exactly_when_the_filter_matches_it(f in filter(), t in topic()) {
            let reference = mqtt_codec::TopicFilter::parse(&f).unwrap().matches(&mqtt_codec::TopicName::parse(&t).unwrap());
            prop_assert_eq!(covers(&f, &t), reference);
        }

        /// If `outer` covers the filter `inner`, it matches every topic `inner` matches.
        #[test]
        fn covering_filters_match_a_superset(outer in filter(), inner in filter(), t in topic()) {
            let matches = |f: &str| mqtt_codec::TopicFilter::parse(f).unwrap().matches(&mqtt_codec::TopicName::parse(&t).unwrap());
            if covers(&outer, &inner) && matches(&inner) {
                prop_assert!(matches(&outer), "{} covers {} but misses {}", outer, inner, t);
            }
        }
    }
}
