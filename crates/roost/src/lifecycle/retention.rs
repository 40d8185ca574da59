//! How long each sensor's data is kept: the sensor's own retention (dashboard, API), else the
//! first `--retention-rule` whose filter matches one of its topics, else `--retention`; the
//! rollups have one retention each. Pure: the purge asks, the store deletes.

use crate::ingest::TopicTemplate;
use crate::model::{Keep, SensorKey, TimestampMs};
use crate::settings::parse_keep;
use mqtt_codec::{TopicFilter, TopicName};

/// Sensors whose topic matches `filter` keep their raw readings for `keep`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub filter: TopicFilter,
    pub keep: Keep,
}

impl RetentionRule {
    pub fn new(filter: &str, keep: &str) -> Result<Self, String> {
        let filter = TopicFilter::parse(filter).map_err(|e| format!("{filter:?} is not a topic filter: {e}"))?;
        Ok(Self { filter, keep: parse_keep(keep)? })
    }
}

/// Every retention setting, as `serve` was given them.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Raw readings (and rejects) of sensors without a rule or their own retention.
    pub default: Keep,
    pub rules: Vec<RetentionRule>,
    pub minute_rollups: Keep,
    pub hourly_rollups: Keep,
    /// The topics a sensor publishes on, for matching rules.
    pub templates: Vec<TopicTemplate>,
}

/// Where a sensor's retention comes from, for the API and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepSource {
    Sensor,
    Rule,
    Default,
}

impl RetentionPolicy {
    /// How long `sensor`'s raw readings are kept, given its own retention, and why.
    pub fn raw(&self, sensor: &SensorKey, own: Option<Keep>) -> (Keep, KeepSource) {
        if let Some(keep) = own {
            return (keep, KeepSource::Sensor);
        }
        let topics: Vec<TopicName> =
            self.templates.iter().filter_map(|t| t.topic(sensor)).filter_map(|topic| TopicName::parse(&topic).ok()).collect();
        match self.rules.iter().find(|rule| topics.iter().any(|topic| rule.filter.matches(topic))) {
            Some(rule) => (rule.keep, KeepSource::Rule),
            None => (self.default, KeepSource::Default),
        }
    }

    /// The oldest reading time kept at `now` in each table, raw first: what a chart can still be
    /// drawn from.
    pub fn cutoffs(&self, raw: Keep, now: TimestampMs) -> [Option<TimestampMs>; 3] {
        [raw.cutoff(now), self.minute_rollups.cutoff(now), self.hourly_rollups.cutoff(now)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn days(n: u64) -> Keep {
        Keep::For(Duration::from_secs(n * 86_400))
    }

    #[test]
    fn a_sensors_own_retention_beats_the_rules_and_the_first_matching_rule_beats_the_default() {
        let policy = RetentionPolicy {
            default: days(30),
            rules: vec![
                RetentionRule::new("iot/+/sensor/+/illuminate", "7d").unwrap(),
                RetentionRule::new("iot/yanjo/#", "forever").unwrap(),
            ],
            minute_rollups: days(365),
            hourly_rollups: Keep::Forever,
            templates: TopicTemplate::defaults(),
        };
        let light = SensorKey::new("yanjo", "livingroom", "illuminate").unwrap();
        let temp = SensorKey::new("yanjo", "bedroom", "temperature").unwrap();
        let other = SensorKey::new("kim", "garage", "temperature").unwrap();
        assert_eq!(policy.raw(&light, None), (days(7), KeepSource::Rule), "the first matching rule");
        assert_eq!(policy.raw(&temp, None), (Keep::Forever, KeepSource::Rule));
        assert_eq!(policy.raw(&other, None), (days(30), KeepSource::Default));
        assert_eq!(policy.raw(&light, Some(days(1))), (days(1), KeepSource::Sensor));
        assert!(RetentionRule::new("iot/#/x", "7d").unwrap_err().contains("not a topic filter"));
        assert!(RetentionRule::new("iot/#", "soon").is_err());
    }
}
