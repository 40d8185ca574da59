//! Alerts' SQL: rules (`alert_rules`), the state of each rule for each sensor that is not fine
//! (`alert_states`: pending or firing, with the hold time's start), and the history of state
//! changes (`alert_events`). A state change and its event are written in one transaction, so
//! after a crash the history and the states agree.

use super::{decode_rows, query_err, Pool, Store, StoreError};
use crate::model::{AlertEvent, AlertRule, AlertState, AlertStatus, Condition, SensorKey, Severity, TimestampMs};
use sqlx::{QueryBuilder, Row};
use std::time::Duration;

/// Adds `$event` to the history on `$executor` (a macro: each backend's transaction type).
macro_rules! insert_event {
    ($executor:expr, $event:expr) => {{
        let event: &AlertEvent = $event;
        let mut insert = QueryBuilder::new(
            "INSERT INTO alert_events (at, rule_id, rule_owner, rule_name, owner, place, category, state, severity, value, by_user) VALUES (",
        );
        let mut values = insert.separated(", ");
        values.push_bind(event.at.0).push_bind(event.rule_id).push_bind(event.rule_owner.as_str()).push_bind(event.rule_name.as_str());
        values.push_bind(event.sensor.owner.as_str()).push_bind(event.sensor.place.as_str()).push_bind(event.sensor.category.as_str());
        values.push_bind(event.state.as_str()).push_bind(event.severity.as_str()).push_bind(event.value).push_bind(event.by.as_deref());
        insert.push(")").build().execute($executor).await.map(|_| ())
    }};
}

/// One write of the alert engine: a state to keep or drop, and the event to add, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertWrite {
    pub rule: i64,
    pub sensor: SensorKey,
    /// The state now (`None`: fine, the row goes).
    pub state: Option<AlertState>,
    pub event: Option<AlertEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertRuleError {
    #[error("{owner} already has a rule named {name:?}")]
    Exists { owner: String, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// A condition as columns: kind, threshold, clear level, stale time in ms.
fn condition_columns(condition: Condition) -> (&'static str, Option<f64>, Option<f64>, Option<i64>) {
    match condition {
        Condition::Above { level, clear } => ("above", Some(level), Some(clear), None),
        Condition::Below { level, clear } => ("below", Some(level), Some(clear), None),
        Condition::Stale { after } => ("stale", None, None, Some(after.as_millis() as i64)),
    }
}

fn condition_of(kind: &str, threshold: Option<f64>, clear: Option<f64>, stale_ms: Option<i64>) -> Result<Condition, sqlx::Error> {
    let bad = || sqlx::Error::Decode(format!("alert rule of kind {kind:?} with missing columns").into());
    Ok(match kind {
        "above" => Condition::Above { level: threshold.ok_or_else(bad)?, clear: clear.ok_or_else(bad)? },
        "below" => Condition::Below { level: threshold.ok_or_else(bad)?, clear: clear.ok_or_else(bad)? },
        "stale" => Condition::Stale { after: Duration::from_millis(stale_ms.ok_or_else(bad)?.max(0) as u64) },
        _ => return Err(bad()),
    })
}

const SELECT_RULES: &str = "SELECT id, owner, name, filter, kind, threshold, clear_level, hold_ms, stale_ms, severity, webhook,
    from_config, silenced_until FROM alert_rules";

macro_rules! rule_row {
    ($row:expr) => {{
        let filter: String = $row.try_get(3)?;
        let kind: String = $row.try_get(4)?;
        let severity: String = $row.try_get(9)?;
        Ok(AlertRule {
            id: $row.try_get(0)?,
            owner: $row.try_get(1)?,
            name: $row.try_get(2)?,
            filter: mqtt_codec::TopicFilter::parse(&filter).map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
            condition: condition_of(&kind, $row.try_get(5)?, $row.try_get(6)?, $row.try_get(8)?)?,
            hold: Duration::from_millis($row.try_get::<i64, _>(7)?.max(0) as u64),
            severity: Severity::parse(&severity).map_err(|e| sqlx::Error::Decode(e.into()))?,
            webhook: $row.try_get(10)?,
            from_config: $row.try_get::<i16, _>(11)? != 0,
            silenced_until: $row.try_get::<Option<i64>, _>(12)?.map(TimestampMs),
        })
    }};
}

/// Pushes `(owner, name, filter, kind, threshold, clear_level, hold_ms, stale_ms, severity,
/// webhook, from_config)` values.
fn push_rule_values<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, rule: &'a AlertRule)
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<f64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i16: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let (kind, threshold, clear, stale_ms) = condition_columns(rule.condition);
    let mut values = query.separated(", ");
    values.push_bind(rule.owner.as_str());
    values.push_bind(rule.name.as_str());
    values.push_bind(rule.filter.as_str());
    values.push_bind(kind);
    values.push_bind(threshold);
    values.push_bind(clear);
    values.push_bind(rule.hold.as_millis() as i64);
    values.push_bind(stale_ms);
    values.push_bind(rule.severity.as_str());
    values.push_bind(rule.webhook.as_deref());
    values.push_bind(i16::from(rule.from_config));
}

const RULE_COLUMNS: &str = "owner, name, filter, kind, threshold, clear_level, hold_ms, stale_ms, severity, webhook, from_config";

impl Store {
    /// Every rule, by owner and name.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new(SELECT_RULES).push(" ORDER BY owner, name").build().fetch_all(pool).await
                .map_err(query_err("listing alert rules"))?;
            decode_rows(&rows, "reading alert rules", |row| rule_row!(row))
        })
    }

    /// Stores a new rule; its id.
    pub async fn create_alert_rule(&self, rule: &AlertRule) -> Result<i64, AlertRuleError> {
        let inserted = on_pool!(self, pool => {
            let mut insert = QueryBuilder::new(format!("INSERT INTO alert_rules ({RULE_COLUMNS}) VALUES ("));
            push_rule_values(&mut insert, rule);
            insert.push(")").build().execute(pool).await.map(|_| ())
        });
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(AlertRuleError::Exists { owner: rule.owner.clone(), name: rule.name.clone() }),
            other => other.map_err(query_err("creating an alert rule"))?,
        }
        let id = on_pool!(self, pool => QueryBuilder::new("SELECT id FROM alert_rules WHERE owner = ")
            .push_bind(rule.owner.as_str())
            .push(" AND name = ").push_bind(rule.name.as_str())
            .build().fetch_one(pool).await.and_then(|row| row.try_get::<i64, _>(0)).map_err(query_err("reading a new rule's id")))?;
        Ok(id)
    }

    /// Replaces rule `id`; false if there is no such rule. Its states are the alert engine's
    /// to delete ([`Store::delete_alert_states`]): it is their only writer.
    pub async fn replace_alert_rule(&self, id: i64, rule: &AlertRule) -> Result<bool, AlertRuleError> {
        let (kind, threshold, clear, stale_ms) = condition_columns(rule.condition);
        let result = on_pool!(self, pool => async {
            let done = QueryBuilder::new("UPDATE alert_rules SET name = ").push_bind(rule.name.as_str())
                .push(", filter = ").push_bind(rule.filter.as_str())
                .push(", kind = ").push_bind(kind)
                .push(", threshold = ").push_bind(threshold)
                .push(", clear_level = ").push_bind(clear)
                .push(", hold_ms = ").push_bind(rule.hold.as_millis() as i64)
                .push(", stale_ms = ").push_bind(stale_ms)
                .push(", severity = ").push_bind(rule.severity.as_str())
                .push(", webhook = ").push_bind(rule.webhook.as_deref())
                .push(" WHERE id = ").push_bind(id)
                .build().execute(pool).await?;
            Ok::<_, sqlx::Error>(done.rows_affected())
        }.await);
        match result {
            Err(e) if is_unique_violation(&e) => Err(AlertRuleError::Exists { owner: rule.owner.clone(), name: rule.name.clone() }),
            Ok(0) => Ok(self.row_exists("alert_rules", id, "looking up an alert rule").await?),
            other => Ok(other.map_err(query_err("changing an alert rule"))? > 0),
        }
    }

    /// Deletes every state of rule `id` (the rule changed: its states start over).
    pub async fn delete_alert_states(&self, id: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => QueryBuilder::new("DELETE FROM alert_states WHERE rule_id = ").push_bind(id)
            .build().execute(pool).await.map(|_| ()).map_err(query_err("deleting a rule's alert states")))
    }

    /// Deletes rule `id` and its states (its history stays); false if there was none.
    pub async fn delete_alert_rule(&self, id: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            QueryBuilder::new("DELETE FROM alert_states WHERE rule_id = ").push_bind(id).build().execute(&mut *tx).await?;
            let done = QueryBuilder::new("DELETE FROM alert_rules WHERE id = ").push_bind(id).build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        }.await.map_err(query_err("deleting an alert rule")))
    }

    /// Makes the config file's rules the stored ones: each is created or replaced (by owner and
    /// name; a replaced rule's states start over unless only its silence differs), and config
    /// rules no longer in the file are deleted. A rule the database refuses is logged and left
    /// out; the others still apply.
    pub async fn sync_config_alert_rules(&self, rules: &[AlertRule]) -> Result<(), StoreError> {
        let stored = self.alert_rules().await?;
        for rule in rules {
            let same_key = stored.iter().find(|s| s.owner == rule.owner && s.name == rule.name);
            let outcome = match same_key {
                Some(old) if AlertRule { id: old.id, silenced_until: old.silenced_until, ..rule.clone() } == *old => Ok(()),
                Some(old) => {
                    async {
                        self.replace_alert_rule(old.id, rule).await?;
                        self.delete_alert_states(old.id).await?;
                        on_pool!(self, pool => QueryBuilder::new("UPDATE alert_rules SET from_config = 1 WHERE id = ").push_bind(old.id)
                        .build().execute(pool).await.map(|_| ()).map_err(query_err("marking a config alert rule")))?;
                        Ok::<_, AlertRuleError>(())
                    }
                    .await
                }
                None => self.create_alert_rule(rule).await.map(|_| ()),
            };
            match outcome {
                Ok(()) => {}
                Err(AlertRuleError::Store(e)) => return Err(e),
                Err(refused) => {
                    tracing::error!(owner = %rule.owner, name = %rule.name, error = %refused, "config file alert rule not stored")
                }
            }
        }
        for gone in stored.iter().filter(|s| s.from_config && !rules.iter().any(|r| r.owner == s.owner && r.name == s.name)) {
            tracing::info!(owner = %gone.owner, name = %gone.name, "alert rule no longer in the config file: deleted");
            self.delete_alert_rule(gone.id).await?;
        }
        Ok(())
    }

    /// Silences rule `id`'s webhooks until `until` (`None`: no longer silenced); false if there
    /// is no such rule.
    pub async fn silence_alert_rule(&self, id: i64, until: Option<TimestampMs>) -> Result<bool, StoreError> {
        on_pool!(self, pool => QueryBuilder::new("UPDATE alert_rules SET silenced_until = ").push_bind(until.map(|t| t.0))
            .push(" WHERE id = ").push_bind(id)
            .build().execute(pool).await.map(|_| ()).map_err(query_err("silencing an alert rule")))?;
        self.row_exists("alert_rules", id, "looking up an alert rule").await
    }

    /// Every stored state: (rule id, sensor, state).
    pub async fn alert_states(&self) -> Result<Vec<(i64, SensorKey, AlertState)>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new("SELECT rule_id, owner, place, category, status, since, value, acked_by FROM alert_states ORDER BY since")
                .build().fetch_all(pool).await.map_err(query_err("reading alert states"))?;
            decode_rows(&rows, "decoding alert states", |row| {
                let status: String = row.try_get(4)?;
                let status = match status.as_str() {
                    "pending" => AlertStatus::Pending,
                    "firing" => AlertStatus::Firing,
                    other => return Err(sqlx::Error::Decode(format!("alert status {other:?}").into())),
                };
                Ok((
                    row.try_get(0)?,
                    super::sensor_key_at(row, 1)?,
                    AlertState { status, since: TimestampMs(row.try_get(5)?), value: row.try_get(6)?, acked_by: row.try_get(7)? },
                ))
            })
        })
    }

    /// Writes the alert engine's changes in one transaction.
    pub async fn write_alerts(&self, writes: &[AlertWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            for write in writes {
                let key = &write.sensor;
                QueryBuilder::new("DELETE FROM alert_states WHERE rule_id = ").push_bind(write.rule)
                    .push(" AND owner = ").push_bind(key.owner.as_str())
                    .push(" AND place = ").push_bind(key.place.as_str())
                    .push(" AND category = ").push_bind(key.category.as_str())
                    .build().execute(&mut *tx).await?;
                if let Some(state) = &write.state {
                    let mut insert = QueryBuilder::new("INSERT INTO alert_states (rule_id, owner, place, category, status, since, value, acked_by) VALUES (");
                    let mut values = insert.separated(", ");
                    values.push_bind(write.rule).push_bind(key.owner.as_str()).push_bind(key.place.as_str()).push_bind(key.category.as_str());
                    values.push_bind(state.status.as_str()).push_bind(state.since.0).push_bind(state.value).push_bind(state.acked_by.as_deref());
                    insert.push(")").build().execute(&mut *tx).await?;
                }
                if let Some(event) = &write.event {
                    insert_event!(&mut *tx, event)?;
                }
            }
            tx.commit().await
        }.await.map_err(query_err("writing alert states")))
    }

    /// Marks rule `rule`'s firing alert for `sensor` acknowledged by `by`; false if it is not
    /// firing.
    pub async fn acknowledge_alert(&self, rule: &AlertRule, sensor: &SensorKey, by: &str) -> Result<bool, StoreError> {
        let event = AlertEvent {
            id: 0,
            at: TimestampMs::now(),
            rule_id: rule.id,
            rule_owner: rule.owner.clone(),
            rule_name: rule.name.clone(),
            sensor: sensor.clone(),
            state: "acknowledged".into(),
            severity: rule.severity,
            value: None,
            by: Some(by.to_owned()),
        };
        on_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let done = QueryBuilder::new("UPDATE alert_states SET acked_by = ").push_bind(by)
                .push(" WHERE status = 'firing' AND rule_id = ").push_bind(rule.id)
                .push(" AND owner = ").push_bind(sensor.owner.as_str())
                .push(" AND place = ").push_bind(sensor.place.as_str())
                .push(" AND category = ").push_bind(sensor.category.as_str())
                .build().execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            insert_event!(&mut *tx, &event)?;
            tx.commit().await?;
            Ok(true)
        }.await.map_err(query_err("acknowledging an alert")))
    }

    /// The newest `limit` events, newest first; given `owner`, only of that user's rules or
    /// sensors.
    pub async fn alert_events(&self, owner: Option<&str>, limit: i64) -> Result<Vec<AlertEvent>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT id, at, rule_id, rule_owner, rule_name, owner, place, category, state, severity, value, by_user
                FROM alert_events");
            if let Some(owner) = owner {
                query.push(" WHERE rule_owner = ").push_bind(owner).push(" OR owner = ").push_bind(owner);
            }
            let rows = query.push(" ORDER BY id DESC LIMIT ").push_bind(limit).build().fetch_all(pool).await
                .map_err(query_err("reading alert history"))?;
            decode_rows(&rows, "decoding alert history", |row| {
                let severity: String = row.try_get(9)?;
                Ok(AlertEvent {
                    id: row.try_get(0)?,
                    at: TimestampMs(row.try_get(1)?),
                    rule_id: row.try_get(2)?,
                    rule_owner: row.try_get(3)?,
                    rule_name: row.try_get(4)?,
                    sensor: super::sensor_key_at(row, 5)?,
                    state: row.try_get(8)?,
                    severity: Severity::parse(&severity).map_err(|e| sqlx::Error::Decode(e.into()))?,
                    value: row.try_get(10)?,
                    by: row.try_get(11)?,
                })
            })
        })
    }
}
