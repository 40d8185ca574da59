//! Alert rules as people write them (`[[alert]]` in the config file, the API): checked into an
//! [`AlertRule`] at the edge, with errors that name the field. Pure.

use crate::model::{AlertRule, Condition, Severity};
use crate::settings::parse_duration;
use mqtt_codec::TopicFilter;
use std::time::Duration;

/// Longest rule name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A rule as written: the config file's `[[alert]]` table and the API's JSON body.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// A topic filter over the sensors' topics, e.g. `iot/+/sensor/greenhouse/temperature`.
    pub topic: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// Where a firing threshold alert resolves (default: the threshold itself).
    pub clear: Option<f64>,
    /// Hold time before firing, e.g. `"10m"` (default: none, fire at once).
    #[serde(rename = "for")]
    pub hold: Option<String>,
    /// No reading for this long fires, e.g. `"15m"`.
    pub stale: Option<String>,
    pub severity: Option<String>,
    pub webhook: Option<String>,
    /// The owning user; the config file's rules default to `admin`, the API's to the caller.
    pub owner: Option<String>,
}

impl RuleSpec {
    /// The rule this spec describes, owned by `owner` unless it names one.
    pub fn check(&self, owner: &str, from_config: bool) -> Result<AlertRule, String> {
        let name = check_name(&self.name)?;
        // The longest every database stores (MariaDB's columns).
        if self.topic.chars().count() > 500 {
            return Err("`topic` must be at most 500 characters".into());
        }
        if self.webhook.as_ref().is_some_and(|w| w.chars().count() > 2000) {
            return Err("`webhook` must be at most 2000 characters".into());
        }
        if let Some(owner) = &self.owner {
            // A level of the notices' topics, as long as a user name may be.
            if owner.is_empty() || owner.chars().count() > crate::model::MAX_LEVEL_CHARS || owner.contains(['/', '+', '#']) {
                return Err(format!("`owner` {owner:?} must be a user name (no / + #, at most 191 characters)"));
            }
        }
        let filter = TopicFilter::parse(&self.topic).map_err(|e| format!("`topic` {:?} is not a topic filter: {e}", self.topic))?;
        let hold = self.hold.as_deref().map(|t| parse_duration(t).map_err(|e| format!("`for`: {e}"))).transpose()?;
        let condition = match (self.above, self.below, &self.stale) {
            (Some(level), None, None) => {
                let clear = self.clear.unwrap_or(level);
                if !level.is_finite() || !clear.is_finite() || clear > level {
                    return Err(format!("`clear` ({clear}) must be a number at or below `above` ({level})"));
                }
                Condition::Above { level, clear }
            }
            (None, Some(level), None) => {
                let clear = self.clear.unwrap_or(level);
                if !level.is_finite() || !clear.is_finite() || clear < level {
                    return Err(format!("`clear` ({clear}) must be a number at or above `below` ({level})"));
                }
                Condition::Below { level, clear }
            }
            (None, None, Some(stale)) => {
                if self.clear.is_some() || hold.is_some() {
                    return Err("a `stale` rule takes no `clear` or `for` (the stale time is its hold time)".into());
                }
                let after = parse_duration(stale).map_err(|e| format!("`stale`: {e}"))?;
                if after < Duration::from_secs(1) {
                    return Err("`stale` must be at least 1s".into());
                }
                Condition::Stale { after }
            }
            _ => return Err("give exactly one of `above`, `below` or `stale`".into()),
        };
        let severity = self.severity.as_deref().map(Severity::parse).transpose()?.unwrap_or_default();
        let webhook = self.webhook.as_deref().map(|url| super::webhook::WebhookUrl::parse(url).map(|_| url.to_owned())).transpose()?;
        Ok(AlertRule {
            id: 0,
            owner: self.owner.clone().unwrap_or_else(|| owner.to_owned()),
            name,
            filter,
            condition,
            hold: hold.unwrap_or(Duration::ZERO),
            severity,
            webhook,
            from_config,
            silenced_until: None,
        })
    }

    /// The spec of `rule` (the API shows rules as they are written).
    pub fn of(rule: &AlertRule) -> Self {
        let text = |d: Duration| crate::model::Keep::For(d).to_string();
        let (above, below, clear, stale) = match rule.condition {
            Condition::Above { level, clear } => (Some(level), None, Some(clear), None),
            Condition::Below { level, clear } => (None, Some(level), Some(clear), None),
            Condition::Stale { after } => (None, None, None, Some(text(after))),
        };
        Self {
            name: rule.name.clone(),
            topic: rule.filter.as_str().to_owned(),
            above,
            below,
            clear,
            hold: (!rule.hold.is_zero()).then(|| text(rule.hold)),
            stale,
            severity: Some(rule.severity.as_str().to_owned()),
            webhook: rule.webhook.clone(),
            owner: Some(rule.owner.clone()),
        }
    }
}

/// A rule's name is a level of its MQTT topic (`roost/alerts/<owner>/<name>`).
fn check_name(name: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(ok) {
        return Err(format!("`name` {name:?} must be 1 to {MAX_NAME_CHARS} letters, digits, `_`, `-` or `.`"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, topic: &str) -> RuleSpec {
        RuleSpec { name: name.into(), topic: topic.into(), ..RuleSpec::default() }
    }

    #[test]
    fn a_threshold_rule_with_hysteresis_and_hold() {
        let rule =
            RuleSpec { above: Some(30.0), clear: Some(29.0), hold: Some("10m".into()), ..spec("hot", "iot/+/sensor/gh/temperature") }
                .check("alice", false)
                .unwrap();
        assert_eq!(rule.condition, Condition::Above { level: 30.0, clear: 29.0 });
        assert_eq!((rule.hold, rule.severity, rule.owner.as_str()), (Duration::from_secs(600), Severity::Warning, "alice"));
        assert_eq!(RuleSpec::of(&rule).check("bob", false).unwrap(), rule, "the spec shown is the rule");
        let below = RuleSpec { below: Some(5.0), ..spec("cold", "iot/#") }.check("a", true).unwrap();
        assert_eq!(below.condition, Condition::Below { level: 5.0, clear: 5.0 }, "clear defaults to the threshold");
        let stale =
            RuleSpec { stale: Some("15m".into()), severity: Some("critical".into()), ..spec("quiet", "iot/#") }.check("a", true).unwrap();
        assert_eq!((stale.condition, stale.severity), (Condition::Stale { after: Duration::from_secs(900) }, Severity::Critical));
    }

    #[test]
    fn bad_rules_say_which_field() {
        let check = |s: RuleSpec| s.check("a", false).unwrap_err();
        assert!(check(RuleSpec { above: Some(30.0), clear: Some(31.0), ..spec("x", "iot/#") }).contains("`clear`"));
        assert!(check(RuleSpec { below: Some(5.0), clear: Some(4.0), ..spec("x", "iot/#") }).contains("`clear`"));
        assert!(check(RuleSpec { above: Some(1.0), below: Some(0.0), ..spec("x", "iot/#") }).contains("exactly one"));
        assert!(check(spec("x", "iot/#")).contains("exactly one"));
        assert!(check(RuleSpec { above: Some(1.0), ..spec("a/b", "iot/#") }).contains("`name`"));
        assert!(check(RuleSpec { above: Some(1.0), ..spec("x", "iot/#/a") }).contains("`topic`"));
        assert!(check(RuleSpec { above: Some(1.0), hold: Some("soon".into()), ..spec("x", "iot/#") }).contains("`for`"));
        assert!(check(RuleSpec { stale: Some("5m".into()), hold: Some("1m".into()), ..spec("x", "iot/#") }).contains("stale"));
        assert!(check(RuleSpec { above: Some(1.0), severity: Some("bad".into()), ..spec("x", "iot/#") }).contains("severity"));
        assert!(check(RuleSpec { above: Some(1.0), webhook: Some("ftp://x".into()), ..spec("x", "iot/#") }).contains("http"));
    }
}
