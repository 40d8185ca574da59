//! How long each sensor's data is kept: the sensor's own retention (dashboard, API), else the
//! first `--retention-rule` whose filter matches one of its topics, else `--retention`; the
//! rollups have one retention each. Pure: the purge asks, the store deletes.

use crate::ingest::TopicTemplate;
use crate::model::{Keep, SensorKey, TimestampMs};
use crate::settings::parse_keep;
use crate::store::Series;
use mqtt_codec::TopicFilter;

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
        let topics = TopicTemplate::topics_of(&self.templates, sensor);
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

/// Buckets at least this many rows of a series wide are drawn from it: a bucket of five minutes
/// from the per-minute rollups, of five hours from the hourly ones.
const ROWS_PER_BUCKET: i64 = 5;

impl RetentionPolicy {
    /// The series a chart from `from` in buckets of `width_ms` is drawn from, and the bucket
    /// width it gets: the coarsest series that still gives each bucket several rows (the
    /// answer is exact either way: min, max, sum and count roll up), unless that series no
    /// longer reaches back to `from`; then the finest one that does, and buckets at least one
    /// of its rows wide.
    pub fn chart_series(&self, raw: Keep, now: TimestampMs, from: TimestampMs, width_ms: i64) -> (Series, i64) {
        let cutoffs = self.cutoffs(raw, now);
        let reaches = |i: usize| cutoffs[i].is_none_or(|cutoff| cutoff <= from);
        let preferred = Series::ALL.iter().rposition(|s| s.period_ms() == 1 || width_ms >= ROWS_PER_BUCKET * s.period_ms()).unwrap_or(0);
        // Past the hourly retention nothing is left at all: the hourly series answers (empty).
        let index = (preferred..Series::ALL.len()).find(|&i| reaches(i)).unwrap_or(Series::ALL.len() - 1);
        let series = Series::ALL[index];
        (series, width_ms.max(series.period_ms()))
    }
}

/// Retentions this short are most likely a unit left out (a bare number is seconds: `7` keeps
/// 7 s), and a purge acts on them: `serve` warns of each.
const SUSPICIOUSLY_SHORT: std::time::Duration = std::time::Duration::from_secs(3600);

impl RetentionPolicy {
    /// The settings that keep data less than an hour: (the flag, its value).
    pub fn suspiciously_short(&self) -> Vec<(String, Keep)> {
        let fixed = [
            ("--retention", self.default),
            ("--minute-rollup-retention", self.minute_rollups),
            ("--hourly-rollup-retention", self.hourly_rollups),
        ];
        let rules = self.rules.iter().map(|r| (format!("--retention-rule {}", r.filter.as_str()), r.keep));
        fixed
            .into_iter()
            .map(|(flag, keep)| (flag.to_owned(), keep))
            .chain(rules)
            .filter(|(_, keep)| matches!(keep, Keep::For(d) if *d < SUSPICIOUSLY_SHORT))
            .collect()
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
    fn retentions_under_an_hour_are_pointed_out() {
        let policy = RetentionPolicy {
            default: Keep::For(Duration::from_secs(7)),
            rules: vec![RetentionRule::new("iot/+/sensor/#", "30").unwrap(), RetentionRule::new("iot/#", "7d").unwrap()],
            minute_rollups: days(365),
            hourly_rollups: Keep::Forever,
            templates: Vec::new(),
        };
        let short: Vec<String> = policy.suspiciously_short().into_iter().map(|(flag, keep)| format!("{flag}: {keep}")).collect();
        assert_eq!(short, ["--retention: 7s", "--retention-rule iot/+/sensor/#: 30s"]);
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

    #[test]
    fn charts_use_the_coarsest_useful_series_that_still_reaches_back() {
        let policy = RetentionPolicy {
            default: days(30),
            rules: Vec::new(),
            minute_rollups: days(365),
            hourly_rollups: Keep::Forever,
            templates: TopicTemplate::defaults(),
        };
        let now = TimestampMs(1000 * 86_400_000);
        let ago = |d: i64| TimestampMs(now.0 - d * 86_400_000);
        const MIN: i64 = 60_000;
        assert_eq!(policy.chart_series(days(30), now, ago(1), 12_000), (Series::Raw, 12_000), "an hour's chart: raw");
        assert_eq!(policy.chart_series(days(30), now, ago(2), 10 * MIN), (Series::Minutes, 10 * MIN));
        assert_eq!(policy.chart_series(days(30), now, ago(365), 29 * 60 * MIN), (Series::Hours, 29 * 60 * MIN), "a year");
        assert_eq!(policy.chart_series(days(30), now, ago(40), 12_000), (Series::Minutes, MIN), "raw is gone: minutes");
        assert_eq!(policy.chart_series(days(30), now, ago(400), 12_000), (Series::Hours, 60 * MIN), "minutes are gone");
        assert_eq!(policy.chart_series(Keep::Forever, now, ago(400), 12_000), (Series::Raw, 12_000), "kept forever");
        let short = RetentionPolicy { hourly_rollups: days(500), ..policy };
        assert_eq!(short.chart_series(days(30), now, ago(600), 12_000), (Series::Hours, 60 * MIN), "nothing left: empty hours");
    }
}
