//! Topic names (what a PUBLISH carries) and topic filters (what a SUBSCRIBE asks for), parsed once at the edge.

use std::fmt;
use std::sync::Arc;
use thiserror::Error;

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    #[error("[MQTT-4.7.3-1] topic is empty")]
    Empty,
    #[error("[MQTT-4.7.3-3] topic is longer than 65535 bytes")]
    TooLong,
    #[error("[MQTT-4.7.3-2] topic contains U+0000")]
    NullCharacter,
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard character")]
    WildcardInName,
    #[error("[MQTT-4.7.1-2] '#' must be the last level of a filter and stand alone")]
    BadMultiLevelWildcard,
    #[error("[MQTT-4.7.1-3] '+' must occupy a whole level of a filter")]
    BadSingleLevelWildcard,
}

/// A valid topic name: non-empty, no wildcards, no U+0000. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Topics starting with `$` are for the server (`$SYS/...`) and are not matched by filters
    /// that start with a wildcard [MQTT-4.7.2-1].
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid topic filter: wildcards `+` and `#` only as whole levels, `#` only last.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(TopicError::BadMultiLevelWildcard);
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::BadSingleLevelWildcard);
            }
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether `topic` matches this filter (MQTT 3.1.1 §4.7). The reference matcher: the
    /// broker's trie is property-tested against it.
    pub fn matches(&self, topic: &TopicName) -> bool {
        if topic.is_system() && self.0.starts_with(['+', '#']) {
            return false;
        }
        let mut filter = self.levels();
        let mut name = topic.levels();
        loop {
            match (filter.next(), name.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(n)) if f == n => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 65_535 {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter).unwrap().matches(&TopicName::parse(topic).unwrap())
    }

    #[test]
    fn spec_examples_of_multi_level_wildcard() {
        // MQTT 3.1.1 §4.7.1.2 non-normative examples.
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b"));
    }

    #[test]
    fn spec_examples_of_single_level_wildcard() {
        // MQTT 3.1.1 §4.7.1.3.
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!m("sport/+", "sport"));
        assert!(m("sport/+", "sport/"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
    }

    #[test]
    fn wildcards_do_not_match_dollar_topics() {
        // [MQTT-4.7.2-1]
        assert!(!m("#", "$SYS/broker/uptime"));
        assert!(!m("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(m("$SYS/#", "$SYS/broker/uptime"));
        assert!(m("$SYS/+/uptime", "$SYS/broker/uptime"));
    }

    #[test]
    fn invalid_filters_are_refused() {
        // [MQTT-4.7.1-2], [MQTT-4.7.1-3]
        for bad in ["sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/b+/c", "", "a\0b"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["#", "+", "+/tennis/#", "sport/+/player1", "/", "a//b"] {
            assert!(TopicFilter::parse(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn topic_names_refuse_wildcards() {
        assert_eq!(TopicName::parse("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::parse("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::parse(""), Err(TopicError::Empty));
    }
}
