//! Alerts over HTTP: rules (a user's own; admins all), the alerts now pending or firing, their
//! history, acknowledging a firing alert and silencing a rule's webhooks. Rules of the config
//! file are shown but changed only there.

use super::auth::Viewer;
use super::error::ApiError;
use super::params::{ApiJson, ApiPath, ApiQuery};
use super::ApiState;
use crate::alerts::rule::RuleSpec;
use crate::alerts::Command;
use crate::auth::acl::{covers, OWNER_ROOT};
use crate::model::{AlertRule, Level, SensorKey, TimestampMs};
use crate::settings::parse_duration;
use crate::store::AlertRuleError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};

/// Most history events in one answer.
const MAX_EVENTS: i64 = 1000;

fn rule_json(rule: &AlertRule) -> Value {
    let mut value = serde_json::to_value(RuleSpec::of(rule)).expect("a spec serializes");
    value["id"] = rule.id.into();
    value["from_config"] = rule.from_config.into();
    value["silenced_until"] = rule.silenced_until.map(|t| t.0).into();
    value
}

fn sensor_json(sensor: &SensorKey) -> Value {
    json!({ "owner": sensor.owner, "place": sensor.place, "category": sensor.category })
}

impl From<AlertRuleError> for ApiError {
    fn from(e: AlertRuleError) -> Self {
        match e {
            AlertRuleError::Exists { .. } => ApiError::Conflict(e.to_string()),
            AlertRuleError::Store(e) => ApiError::Store(e),
        }
    }
}

/// The rule `id`, if this viewer owns it (admins: any). Others' rules are "not found".
async fn find_rule(state: &ApiState, viewer: &Viewer, id: i64) -> Result<AlertRule, ApiError> {
    let rules = state.store.alert_rules().await?;
    rules.into_iter().find(|r| r.id == id && viewer.may_see(&r.owner)).ok_or_else(|| ApiError::NotFound(format!("no alert rule {id}")))
}

fn not_from_config(rule: &AlertRule) -> Result<(), ApiError> {
    if rule.from_config {
        return Err(ApiError::Conflict(format!("the rule {:?} is defined in the config file: change it there", rule.name)));
    }
    Ok(())
}

/// The rule a viewer asks for: owned by them (admins may name another owner), over sensors
/// they may see.
fn checked_rule(state: &ApiState, viewer: &Viewer, spec: &RuleSpec) -> Result<AlertRule, ApiError> {
    let me = viewer.name.as_deref().unwrap_or("admin");
    let rule = spec.check(me, false).map_err(ApiError::BadRequest)?;
    if viewer.admin {
        return Ok(rule);
    }
    if rule.owner != me {
        return Err(ApiError::Forbidden(format!("you may make rules only as yourself ({me})")));
    }
    // Every topic the filter could match must be one of this user's sensors.
    let own = crate::model::SensorKey { owner: me.into(), place: "+".into(), category: "+".into() };
    let allowed = std::iter::once(format!("{OWNER_ROOT}/{me}/#")).chain(state.templates.iter().filter_map(|t| t.topic(&own)));
    let filter = rule.filter.as_str();
    if !allowed.into_iter().any(|outer| covers(&outer, filter)) {
        return Err(ApiError::Forbidden(format!("the filter {filter:?} reaches other owners' sensors: use {OWNER_ROOT}/{me}/...")));
    }
    Ok(rule)
}

/// A rule whose owner is not an admin may not call this machine or a link-local address
/// (`alerts::webhook`; the engine judges by the owner, whoever made the rule): said now, rather
/// than found in the server's log at the first alert. Anonymous mode restricts nobody.
async fn refuse_forbidden_webhook(state: &ApiState, viewer: &Viewer, rule: &AlertRule) -> Result<(), ApiError> {
    let Some(url) = &rule.webhook else { return Ok(()) };
    if viewer.name.is_none() || state.store.user(&rule.owner).await.map_err(ApiError::Store)?.is_some_and(|owner| owner.is_admin) {
        return Ok(());
    }
    if crate::alerts::webhook::only_forbidden(url).await {
        return Err(ApiError::BadRequest(
            "the webhook may not call this machine (loopback or one of its own addresses) or a link-local address: \
             only the rules of admins may"
                .into(),
        ));
    }
    Ok(())
}

pub async fn rules(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Vec<Value>>, ApiError> {
    let rules = state.store.alert_rules().await?;
    Ok(Json(rules.iter().filter(|r| viewer.may_see(&r.owner)).map(rule_json).collect()))
}

pub async fn create(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiJson(spec): ApiJson<RuleSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut rule = checked_rule(&state, &viewer, &spec)?;
    refuse_forbidden_webhook(&state, &viewer, &rule).await?;
    rule.id = state.store.create_alert_rule(&rule).await?;
    tracing::info!(owner = %rule.owner, name = %rule.name, by = viewer.name.as_deref().unwrap_or("anonymous"), "alert rule created");
    state.alerts.tell(Command::RulesChanged);
    Ok((StatusCode::CREATED, Json(rule_json(&rule))))
}

pub async fn replace(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    // A rule as GET shows it may come back as it is: its read-only fields are left out here.
    if let Some(fields) = body.as_object_mut() {
        for read_only in ["id", "from_config", "silenced_until"] {
            fields.remove(read_only);
        }
    }
    let spec: RuleSpec = serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("not a rule: {e}")))?;
    let old = find_rule(&state, &viewer, id).await?;
    not_from_config(&old)?;
    let mut rule = checked_rule(&state, &viewer, &RuleSpec { owner: spec.owner.clone().or(Some(old.owner.clone())), ..spec })?;
    if rule.owner != old.owner {
        return Err(ApiError::BadRequest("a rule's owner cannot change: make a new rule".into()));
    }
    refuse_forbidden_webhook(&state, &viewer, &rule).await?;
    // Saved unchanged: its states (a hold time running, a firing alert) stay as they are.
    if (AlertRule { id: old.id, silenced_until: old.silenced_until, ..rule.clone() }) == old {
        return Ok(Json(rule_json(&old)));
    }
    if !state.store.replace_alert_rule(id, &rule).await? {
        return Err(ApiError::NotFound(format!("no alert rule {id}")));
    }
    rule.id = id;
    rule.silenced_until = old.silenced_until;
    state.alerts.tell(Command::RulesChanged);
    Ok(Json(rule_json(&rule)))
}

pub async fn delete(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let rule = find_rule(&state, &viewer, id).await?;
    not_from_config(&rule)?;
    state.store.delete_alert_rule(id).await?;
    tracing::info!(owner = %rule.owner, name = %rule.name, by = viewer.name.as_deref().unwrap_or("anonymous"), "alert rule deleted");
    state.alerts.tell(Command::RulesChanged);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    /// How long, e.g. `"1h"`; `null` ends a silence. Required.
    #[serde(rename = "for", default, deserialize_with = "super::params::given_or_null")]
    duration: Option<Option<String>>,
}

pub async fn silence(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SilenceBody>,
) -> Result<Json<Value>, ApiError> {
    let mut rule = find_rule(&state, &viewer, id).await?;
    let duration =
        body.duration.ok_or_else(|| ApiError::BadRequest("needs `for`: a duration such as \"1h\", or null to end a silence".into()))?;
    let until = duration
        .map(|text| parse_duration(&text).map_err(|e| ApiError::BadRequest(format!("`for`: {e}"))))
        .transpose()?
        .map(|d| TimestampMs(TimestampMs::now().0.saturating_add(d.as_millis() as i64)));
    if !state.store.silence_alert_rule(id, until).await? {
        return Err(ApiError::NotFound(format!("no alert rule {id}")));
    }
    rule.silenced_until = until;
    state.alerts.tell(Command::RulesChanged);
    Ok(Json(rule_json(&rule)))
}

/// The alerts pending or firing now on sensors this viewer may see, firing first.
pub async fn active(State(state): State<ApiState>, Extension(viewer): Extension<Viewer>) -> Result<Json<Vec<Value>>, ApiError> {
    let rules = state.store.alert_rules().await?;
    let mut states = state.store.alert_states().await?;
    states.retain(|(_, sensor, _)| viewer.may_see(&sensor.owner));
    states.sort_by_key(|(_, _, s)| (s.status != crate::model::AlertStatus::Firing, s.since));
    let active = states
        .iter()
        .filter_map(|(rule_id, sensor, s)| {
            let rule = rules.iter().find(|r| r.id == *rule_id)?;
            Some(json!({
                "rule_id": rule.id, "rule": rule.name, "owner": rule.owner, "severity": rule.severity,
                "sensor": sensor_json(sensor), "state": s.status, "since": s.since.0, "value": s.value,
                "acknowledged_by": s.acked_by, "silenced_until": rule.silenced_until.map(|t| t.0),
            }))
        })
        .collect();
    Ok(Json(active))
}

pub async fn acknowledge(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiPath((id, owner, place, category)): ApiPath<(i64, Level, Level, Level)>,
) -> Result<StatusCode, ApiError> {
    let sensor = SensorKey { owner, place, category };
    let not_firing = || ApiError::NotFound(format!("rule {id} is not firing for {sensor}"));
    if !viewer.may_see(&sensor.owner) {
        return Err(not_firing());
    }
    let rules = state.store.alert_rules().await?;
    let rule = rules.iter().find(|r| r.id == id).ok_or_else(not_firing)?;
    let by = viewer.name.as_deref().unwrap_or("anonymous");
    if !state.store.acknowledge_alert(rule, &sensor, by).await? {
        return Err(not_firing());
    }
    tracing::info!(rule = %rule.name, %sensor, by, "alert acknowledged");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
pub struct EventsQuery {
    limit: Option<String>,
}

/// The newest state changes (fired, resolved, acknowledged) this viewer may see, newest first.
pub async fn events(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Viewer>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let limit = super::params::limit(query.limit.as_deref(), 100, MAX_EVENTS)?;
    let whose = if viewer.admin { None } else { viewer.name.as_deref() };
    let events = state.store.alert_events(whose, limit).await?;
    Ok(Json(
        events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id, "at": e.at.0, "rule_id": e.rule_id, "rule": e.rule_name, "owner": e.rule_owner,
                    "sensor": sensor_json(&e.sensor), "state": e.state, "severity": e.severity, "value": e.value, "by": e.by,
                })
            })
            .collect(),
    ))
}
