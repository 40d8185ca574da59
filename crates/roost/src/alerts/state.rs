//! How one rule's state for one sensor moves: fine (no state) → pending → firing → resolved
//! (fine again), Prometheus' vocabulary. Readings and the clock drive it. Pure: the caller
//! supplies the time.

use crate::model::{AlertRule, AlertState, AlertStatus, Condition, TimestampMs};

/// What changed, for the caller to store and announce.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The condition holds; the hold time runs from `since` (stored, not announced).
    Pending(AlertState),
    /// The alert fires now.
    Fired(AlertState),
    /// A pending condition stopped holding before its hold time (stored, not announced).
    Cancelled,
    /// A firing alert is over: `value` is the reading that ended it.
    Resolved { value: Option<f64> },
}

fn new_state(status: AlertStatus, since: TimestampMs, value: Option<f64>) -> AlertState {
    AlertState { status, since, value, acked_by: None }
}

/// A committed reading `value` of a sensor, evaluated at `now`, with its current state.
pub fn on_reading(rule: &AlertRule, current: Option<&AlertState>, value: f64, now: TimestampMs) -> Option<Change> {
    let (breaching, cleared) = match rule.condition {
        Condition::Above { level, clear } => (value > level, value <= clear),
        Condition::Below { level, clear } => (value < level, value >= clear),
        // Heard from since it went stale: a stale alert is over.
        Condition::Stale { .. } => {
            return current.filter(|s| s.status == AlertStatus::Firing && now > s.since).map(|_| Change::Resolved { value: Some(value) })
        }
    };
    match current.map(|s| s.status) {
        None if breaching && rule.hold.is_zero() => Some(Change::Fired(new_state(AlertStatus::Firing, now, Some(value)))),
        None if breaching => Some(Change::Pending(new_state(AlertStatus::Pending, now, Some(value)))),
        None => None,
        Some(AlertStatus::Pending) if !breaching => Some(Change::Cancelled),
        Some(AlertStatus::Pending) => current.and_then(|s| held_long_enough(rule, s, now)),
        // Between `clear` and the threshold a firing alert keeps firing (hysteresis).
        Some(AlertStatus::Firing) if cleared => Some(Change::Resolved { value: Some(value) }),
        Some(AlertStatus::Firing) => None,
    }
}

/// The clock moved to `now`: a pending alert whose hold time passed fires; a sensor last heard
/// from at `last_seen` goes stale.
pub fn on_tick(rule: &AlertRule, current: Option<&AlertState>, last_seen: Option<TimestampMs>, now: TimestampMs) -> Option<Change> {
    match (rule.condition, current) {
        (Condition::Stale { after }, None) => {
            let silent_since = last_seen?;
            let due = TimestampMs(silent_since.0.saturating_add(after.as_millis() as i64));
            (now >= due).then(|| Change::Fired(new_state(AlertStatus::Firing, due, None)))
        }
        (_, Some(state)) if state.status == AlertStatus::Pending => held_long_enough(rule, state, now),
        _ => None,
    }
}

fn held_long_enough(rule: &AlertRule, pending: &AlertState, now: TimestampMs) -> Option<Change> {
    let due = TimestampMs(pending.since.0.saturating_add(rule.hold.as_millis() as i64));
    (now >= due).then(|| Change::Fired(new_state(AlertStatus::Firing, due, pending.value)))
}

/// Applies `change` to a state slot.
pub fn apply(slot: &mut Option<AlertState>, change: &Change) {
    *slot = match change {
        Change::Pending(state) | Change::Fired(state) => Some(state.clone()),
        Change::Cancelled | Change::Resolved { .. } => None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rule::RuleSpec;

    fn rule(spec: RuleSpec) -> AlertRule {
        RuleSpec { name: "r".into(), topic: "iot/#".into(), ..spec }.check("a", false).unwrap()
    }

    /// Feeds `(second, value)` readings and ticks every second; returns the seconds at which
    /// the alert fired and resolved.
    fn run(rule: &AlertRule, readings: &[(i64, f64)], until: i64) -> Vec<(i64, &'static str)> {
        let mut state = None;
        let mut seen = Vec::new();
        let mut last_seen = None;
        for second in 0..=until {
            let now = TimestampMs(second * 1000);
            let mut changes = Vec::new();
            for &(_, value) in readings.iter().filter(|(s, _)| *s == second) {
                last_seen = Some(now);
                changes.extend(on_reading(rule, state.as_ref(), value, now).inspect(|c| apply(&mut state, c)));
            }
            changes.extend(on_tick(rule, state.as_ref(), last_seen, now).inspect(|c| apply(&mut state, c)));
            for change in changes {
                match change {
                    Change::Fired(_) => seen.push((second, "fired")),
                    Change::Resolved { .. } => seen.push((second, "resolved")),
                    _ => {}
                }
            }
        }
        seen
    }

    #[test]
    fn the_hold_time_must_pass_with_the_condition_holding() {
        let hot = rule(RuleSpec { above: Some(30.0), hold: Some("10s".into()), ..Default::default() });
        // Above for 5 s, then below: never fires.
        assert_eq!(run(&hot, &[(0, 31.0), (5, 29.0)], 30), vec![]);
        // Above from 0 on: fires at 10 s (by the clock, without another reading).
        assert_eq!(run(&hot, &[(0, 31.0), (3, 32.0)], 30), vec![(10, "fired")]);
        // A dip below resets the hold time.
        assert_eq!(run(&hot, &[(0, 31.0), (5, 20.0), (6, 31.0)], 30), vec![(16, "fired")]);
        // Exactly the threshold is not above it.
        assert_eq!(run(&hot, &[(0, 30.0)], 30), vec![]);
    }

    #[test]
    fn hysteresis_resolves_only_past_clear() {
        let hot = rule(RuleSpec { above: Some(30.0), clear: Some(29.0), ..Default::default() });
        assert_eq!(
            run(&hot, &[(0, 31.0), (1, 29.5), (2, 30.5), (3, 29.0), (4, 31.0)], 5),
            vec![(0, "fired"), (3, "resolved"), (4, "fired")]
        );
        let cold = rule(RuleSpec { below: Some(5.0), clear: Some(6.0), ..Default::default() });
        assert_eq!(run(&cold, &[(0, 4.0), (1, 5.5), (2, 6.0)], 3), vec![(0, "fired"), (2, "resolved")]);
    }

    #[test]
    fn a_silent_sensor_goes_stale_and_resolves_when_heard_from() {
        let quiet = rule(RuleSpec { stale: Some("10s".into()), ..Default::default() });
        assert_eq!(run(&quiet, &[(0, 1.0), (5, 1.0), (30, 1.0)], 40), vec![(15, "fired"), (30, "resolved"), (40, "fired")]);
        assert_eq!(run(&quiet, &[], 40), vec![], "a sensor never heard from has nothing to go stale from");
        let Some(Change::Fired(state)) = on_tick(&quiet, None, Some(TimestampMs(0)), TimestampMs(99_000)) else { panic!() };
        assert_eq!(state.since, TimestampMs(10_000), "it fired when the sensor became stale, even if noticed later");
        assert_eq!(on_reading(&quiet, Some(&state), 1.0, TimestampMs(0)), None, "the reading it went stale after does not resolve it");
    }
}
