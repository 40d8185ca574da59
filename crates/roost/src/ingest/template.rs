//! Topic templates such as `iot/{owner}/sensor/{place}/{category}`: parsed once, matched
//! against every topic. Pure functions, no I/O.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Owner,
    Place,
    Category,
}

/// A template: `/`-separated levels, each a literal or one of `{owner}`, `{place}`,
/// `{category}`. `{owner}` and `{place}` are required; without `{category}` the payload names
/// the categories (a JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
    text: String,
}

/// The levels a topic filled into a template. `category` is `None` for templates without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captures<'a> {
    pub owner: &'a str,
    pub place: &'a str,
    pub category: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic template {template:?}: {why}")]
pub struct TemplateError {
    template: String,
    why: &'static str,
}

impl FromStr for TopicTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| TemplateError { template: s.to_owned(), why };
        let mut parts = Vec::new();
        for level in s.split('/') {
            let part = match level {
                "{owner}" => Part::Owner,
                "{place}" => Part::Place,
                "{category}" => Part::Category,
                "" => return Err(err("empty level")),
                l if l.contains(['{', '}', '+', '#']) => return Err(err("unknown placeholder or wildcard")),
                l => Part::Literal(l.to_owned()),
            };
            if !matches!(part, Part::Literal(_)) && parts.contains(&part) {
                return Err(err("placeholder used twice"));
            }
            parts.push(part);
        }
        if !parts.contains(&Part::Owner) || !parts.contains(&Part::Place) {
            return Err(err("needs {owner} and {place}"));
        }
        if !matches!(parts.first(), Some(Part::Literal(_))) {
            return Err(err("must start with a literal level"));
        }
        Ok(Self { parts, text: s.to_owned() })
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TopicTemplate {
    /// The defaults of Roost's topic contract.
    pub fn defaults() -> Vec<Self> {
        ["iot/{owner}/sensor/{place}/{category}", "iot/{owner}/sensor/{place}"]
            .iter()
            .map(|t| t.parse().expect("default templates are valid"))
            .collect()
    }

    /// The first level, always a literal: topics under it are meant for ingest.
    pub fn root(&self) -> &str {
        match &self.parts[0] {
            Part::Literal(l) => l,
            _ => unreachable!("checked when parsed"),
        }
    }

    /// The MQTT filter of the topics this template matches (`{…}` levels as `+`).
    pub fn filter(&self) -> String {
        let levels: Vec<&str> = self.parts.iter().map(|part| if let Part::Literal(l) = part { l.as_str() } else { "+" }).collect();
        levels.join("/")
    }

    pub fn has_category(&self) -> bool {
        self.parts.contains(&Part::Category)
    }

    /// The topic a sensor publishes on under this template; `None` without `{category}`.
    pub fn topic(&self, sensor: &crate::model::SensorKey) -> Option<String> {
        if !self.has_category() {
            return None;
        }
        let levels: Vec<&str> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(l) => l.as_str(),
                Part::Owner => &sensor.owner,
                Part::Place => &sensor.place,
                Part::Category => &sensor.category,
            })
            .collect();
        Some(levels.join("/"))
    }

    /// The topics `sensor` publishes on under any of `templates` (for matching topic filters
    /// against sensors: retention rules, `roost export --filter`).
    pub fn topics_of(templates: &[Self], sensor: &crate::model::SensorKey) -> Vec<mqtt_codec::TopicName> {
        templates.iter().filter_map(|t| t.topic(sensor)).filter_map(|topic| mqtt_codec::TopicName::parse(&topic).ok()).collect()
    }

    /// Matches `topic` level by level; placeholders take exactly one non-empty level.
    pub fn captures<'a>(&self, topic: &'a str) -> Option<Captures<'a>> {
        let mut levels = topic.split('/');
        let (mut owner, mut place, mut category) = (None, None, None);
        for part in &self.parts {
            let level = levels.next()?;
            match part {
                Part::Literal(l) if l == level => {}
                Part::Literal(_) => return None,
                _ if level.is_empty() => return None,
                Part::Owner => owner = Some(level),
                Part::Place => place = Some(level),
                Part::Category => category = Some(level),
            }
        }
        if levels.next().is_some() {
            return None;
        }
        Some(Captures { owner: owner?, place: place?, category })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> TopicTemplate {
        s.parse().unwrap()
    }

    #[test]
    fn a_sensor_topic_is_built_from_the_template_and_matches_it() {
        let [five, four] = &TopicTemplate::defaults()[..] else { panic!() };
        let key = crate::model::SensorKey { owner: "yanjo".into(), place: "livingroom".into(), category: "illuminate".into() };
        let topic = five.topic(&key).unwrap();
        assert_eq!(topic, "iot/yanjo/sensor/livingroom/illuminate");
        assert_eq!(five.captures(&topic).unwrap().category, Some("illuminate"));
        assert_eq!(four.topic(&key), None);
        assert_eq!((five.filter().as_str(), four.filter().as_str()), ("iot/+/sensor/+/+", "iot/+/sensor/+"));
    }

    #[test]
    fn default_templates_capture_the_seed_topics() {
        let [five, four] = &TopicTemplate::defaults()[..] else { panic!() };
        assert_eq!(
            five.captures("iot/yanjo/sensor/livingroom/illuminate"),
            Some(Captures { owner: "yanjo", place: "livingroom", category: Some("illuminate") })
        );
        assert_eq!(four.captures("iot/yanjo/sensor/kitchen"), Some(Captures { owner: "yanjo", place: "kitchen", category: None }));
        // The seed's own 3-level example matches neither.
        assert_eq!(five.captures("iot/livingroom/temp"), None);
        assert_eq!(four.captures("iot/livingroom/temp"), None);
        assert_eq!(five.captures("iot/yanjo/sensor//temp"), None, "empty levels are not captured");
        assert_eq!(five.captures("iot/yanjo/actuator/livingroom/lamp"), None);
        assert_eq!(five.root(), "iot");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "{owner}/x/{place}",
            "iot/{owner}",
            "iot/{owner}/{place}/{owner}",
            "iot//{owner}/{place}",
            "iot/+/{owner}/{place}",
            "iot/{who}/{owner}/{place}",
        ] {
            assert!(bad.parse::<TopicTemplate>().is_err(), "{bad}");
        }
        assert!("home/{place}/{owner}".parse::<TopicTemplate>().is_ok());
    }

    proptest! {
        /// Whatever levels are filled in, they come back out unchanged.
        #[test]
        fn captures_return_what_was_filled_in(owner in "[a-z0-9_-]{1,12}", place in "[a-z0-9 ]{1,12}", category in "[a-z.]{1,12}") {
            let five = t("iot/{owner}/sensor/{place}/{category}");
            let topic = format!("iot/{owner}/sensor/{place}/{category}");
            prop_assert_eq!(five.captures(&topic), Some(Captures { owner: &owner, place: &place, category: Some(&category) }));
            let longer = format!("{topic}/extra");
            prop_assert_eq!(five.captures(&longer), None);
        }
    }
}
