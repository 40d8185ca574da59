//! Subscription trie: topic filters by level, so matching a topic visits only the branches
//! that can match (exact level, `+`, `#`) instead of every subscription.

use mqtt_codec::{QoS, TopicFilter, TopicName};
use std::collections::HashMap;

/// Topic levels of one match, on the stack for all but unusually deep topics.
const STACK_LEVELS: usize = 16;

/// ahash: fast, and keyed per process so clients cannot craft colliding topic levels.
type Children<S> = HashMap<Box<str>, Node<S>, ahash::RandomState>;

#[derive(Debug)]
struct Node<S> {
    children: Children<S>,
    subscribers: Vec<(u64, QoS, S)>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Self { children: Children::default(), subscribers: Vec::new() }
    }
}

/// Maps filters to subscribers (session id, granted QoS, and a value `S` such as a mailbox).
#[derive(Debug)]
pub struct SubscriptionTrie<S> {
    root: Node<S>,
    len: usize,
}

impl<S> Default for SubscriptionTrie<S> {
    fn default() -> Self {
        Self { root: Node::default(), len: 0 }
    }
}

impl<S: Clone> SubscriptionTrie<S> {
    /// Adds or replaces (same session, same filter [MQTT-3.8.4-3]) a subscription.
    pub fn insert(&mut self, filter: &TopicFilter, session: u64, qos: QoS, value: S) {
        let mut node = &mut self.root;
        for level in filter.levels() {
            node = node.children.entry(level.into()).or_default();
        }
        match node.subscribers.iter_mut().find(|(id, _, _)| *id == session) {
            Some(existing) => *existing = (session, qos, value),
            None => {
                node.subscribers.push((session, qos, value));
                self.len += 1;
            }
        }
    }

    /// Removes a subscription; returns whether it existed. Empty branches are pruned.
    pub fn remove(&mut self, filter: &TopicFilter, session: u64) -> bool {
        let levels: Vec<&str> = filter.levels().collect();
        let removed = remove_at(&mut self.root, &levels, session);
        if removed {
            self.len -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `session` has a subscription with exactly `filter`.
    pub fn contains(&self, filter: &TopicFilter, session: u64) -> bool {
        let mut node = &self.root;
        for level in filter.levels() {
            match node.children.get(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.subscribers.iter().any(|(id, _, _)| *id == session)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `found` for every subscription whose filter matches `topic` (a session with
    /// overlapping filters is reported once per filter).
    pub fn for_each_match(&self, topic: &TopicName, mut found: impl FnMut(u64, QoS, &S)) {
        let mut stack = [""; STACK_LEVELS];
        let mut count = 0;
        for level in topic.levels() {
            if count == STACK_LEVELS {
                let levels: Vec<&str> = topic.levels().collect();
                return visit(&self.root, &levels, 0, topic.is_system(), &mut found);
            }
            stack[count] = level;
            count += 1;
        }
        visit(&self.root, &stack[..count], 0, topic.is_system(), &mut found);
    }
}

fn remove_at<S>(node: &mut Node<S>, levels: &[&str], session: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        let before = node.subscribers.len();
        node.subscribers.retain(|(id, _, _)| *id != session);
        return node.subscribers.len() != before;
    };
    let Some(child) = node.children.get_mut(*first) else { return false };
    let removed = remove_at(child, rest, session);
    if child.subscribers.is_empty() && child.children.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn visit<S>(node: &Node<S>, levels: &[&str], depth: usize, system: bool, found: &mut impl FnMut(u64, QoS, &S)) {
    let report = |n: &Node<S>, found: &mut dyn FnMut(u64, QoS, &S)| {
        for (id, qos, value) in &n.subscribers {
            found(*id, *qos, value);
        }
    };
    // Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1].
    let wildcards_allowed = !(depth == 0 && system);
    if depth == levels.len() {
        report(node, found);
        // "sport/#" also matches "sport" [MQTT-4.7.1-2].
        if let Some(hash) = node.children.get("#") {
            report(hash, found);
        }
        return;
    }
    if wildcards_allowed {
        if let Some(hash) = node.children.get("#") {
            report(hash, found);
        }
        if let Some(plus) = node.children.get("+") {
            visit(plus, levels, depth + 1, system, found);
        }
    }
    if let Some(child) = node.children.get(levels[depth]) {
        visit(child, levels, depth + 1, system, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(trie: &SubscriptionTrie<()>, topic: &TopicName) -> Vec<(u64, QoS)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |id, qos, _| out.push((id, qos)));
        out.sort();
        out
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("".to_string()), Just("$x".to_string())]
    }

    fn filter() -> impl Strategy<Value = TopicFilter> {
        (prop::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4), any::<bool>())
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                TopicFilter::parse(&levels.join("/")).ok()
            })
            .prop_filter_map("empty filter", |f| f)
    }

    fn topic() -> impl Strategy<Value = TopicName> {
        prop::collection::vec(level(), 1..5).prop_filter_map("empty topic", |l| TopicName::parse(&l.join("/")).ok())
    }

    proptest! {
        /// The trie agrees with the reference matcher `TopicFilter::matches` on every topic,
        /// also after some subscriptions are removed again.
        #[test]
        fn trie_agrees_with_naive_matcher(
            filters in prop::collection::vec(filter(), 0..12),
            remove in prop::collection::vec(any::<bool>(), 12),
            topics in prop::collection::vec(topic(), 1..8),
        ) {
            let mut trie = SubscriptionTrie::default();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(f, i as u64, QoS::AtLeastOnce, ());
            }
            let mut kept = Vec::new();
            for (i, f) in filters.iter().enumerate() {
                if remove[i] {
                    prop_assert!(trie.remove(f, i as u64));
                } else {
                    kept.push((i as u64, f));
                }
            }
            prop_assert_eq!(trie.len(), kept.len());
            for t in &topics {
                let mut expected: Vec<_> = kept.iter().filter(|(_, f)| f.matches(t)).map(|(i, _)| (*i, QoS::AtLeastOnce)).collect();
                expected.sort();
                prop_assert_eq!(matches(&trie, t), expected, "topic {}", t);
            }
        }
    }

    #[test]
    fn resubscribing_replaces_the_qos() {
        let mut trie = SubscriptionTrie::default();
        let f = TopicFilter::parse("a/+").unwrap();
        trie.insert(&f, 1, QoS::AtMostOnce, ());
        trie.insert(&f, 1, QoS::ExactlyOnce, ());
        assert_eq!(trie.len(), 1);
        assert_eq!(matches(&trie, &TopicName::parse("a/b").unwrap()), [(1, QoS::ExactlyOnce)]);
        assert!(trie.remove(&f, 1));
        assert!(trie.root.children.is_empty(), "empty branches are pruned");
    }
}
