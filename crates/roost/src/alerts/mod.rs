//! Alerts: rules over sensors (a threshold with hysteresis and a hold time, or no data for a
//! while), evaluated on committed readings and on the clock; their state kept in the database
//! (it survives restarts and kill -9), announced as retained JSON on
//! `roost/alerts/<owner>/<rule>/<sensor owner>/<place>/<category>` (and a summary on
//! `roost/alerts/<owner>/<rule>`), POSTed to the rule's webhook, and shown on the dashboard.
//!
//! Architecture invariant: the engine is one task that owns the states in memory; readings
//! reach it through the ingest writer's commit feed (so only committed readings count), the
//! API tells it when rules change. It never makes ingest wait: the feed is a bounded
//! broadcast, and a lag is made up from the database.

pub mod rule;
pub mod state;
pub mod webhook;

use crate::broker::{Broker, Message};
use crate::ingest::{Committed, TopicTemplate};
use crate::model::{AlertEvent, AlertRule, AlertState, AlertStatus, Condition, SensorKey, TimestampMs};
use crate::store::{AlertWrite, Store};
use bytes::Bytes;
use mqtt_codec::{QoS, TopicFilter, TopicName};
use state::Change;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The root of alert topics.
pub const TOPIC_ROOT: &str = "roost/alerts";
/// Readings older than this when committed describe the past (a backfill), not now: they do
/// not move threshold alerts.
pub const FRESH: Duration = Duration::from_secs(600);
/// How often hold times and stale sensors are checked.
const TICK: Duration = Duration::from_secs(1);
/// Commands queued from the API (more are dropped: each one reloads every rule).
const COMMANDS: usize = 64;
/// How often the rules are read again anyway: a rule's owner may have been removed or made an
/// admin (`roost user`, another process) since.
const RELOAD: Duration = Duration::from_secs(60);

/// What the API tells the engine.
#[derive(Debug, Clone)]
pub enum Command {
    /// Rules were created, changed, deleted or silenced: read them again.
    RulesChanged,
}

/// The API's line to the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsHandle {
    commands: broadcast::Sender<Command>,
}

impl Default for AlertsHandle {
    fn default() -> Self {
        Self { commands: broadcast::channel(COMMANDS).0 }
    }
}

impl AlertsHandle {
    /// The receiver [`run`] takes (the engine may start more than once: `cluster::lease`).
    pub fn subscribe(&self) -> broadcast::Receiver<Command> {
        self.commands.subscribe()
    }

    /// Never waits: an engine that falls behind reads every rule again, and with no engine
    /// running here (another node holds its lease) there is nobody to tell.
    pub fn tell(&self, command: Command) {
        let _ = self.commands.send(command);
    }
}

/// What the engine needs.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Rules of the config file (`[[alert]]`), stored at start in place of the old ones.
    pub config_rules: Vec<AlertRule>,
    pub templates: Vec<TopicTemplate>,
    /// `--allow-anonymous`: every rule sees every sensor.
    pub anonymous: bool,
}

/// What moves the engine besides the clock.
pub struct AlertInputs {
    /// Committed readings (the ingest writer's commit feed).
    pub commits: broadcast::Receiver<Arc<Committed>>,
    /// Sensors deleted through the API.
    pub deletions: broadcast::Receiver<SensorKey>,
    /// From the API, through an [`AlertsHandle`].
    pub commands: broadcast::Receiver<Command>,
}

/// The JSON of a state change, on MQTT and to webhooks.
#[derive(Debug, serde::Serialize)]
struct Notice<'a> {
    state: &'static str,
    severity: &'static str,
    rule: &'a str,
    owner: &'a str,
    /// `null` in a summary with no sensor left to name.
    sensor: Option<SensorJson<'a>>,
    value: Option<f64>,
    /// When this state began, epoch ms.
    since: i64,
    /// For a rule's summary topic: how many of its sensors fire now.
    #[serde(skip_serializing_if = "Option::is_none")]
    firing: Option<usize>,
}

#[derive(Debug, serde::Serialize)]
struct SensorJson<'a> {
    owner: &'a str,
    place: &'a str,
    category: &'a str,
}

/// `roost/alerts/<owner>/<rule>`, and with a sensor `.../<sensor owner>/<place>/<category>`
/// (an admin's rule watches several owners' sensors).
pub fn alert_topic(rule: &AlertRule, sensor: Option<&SensorKey>) -> Option<TopicName> {
    let topic = match sensor {
        Some(s) => format!("{TOPIC_ROOT}/{}/{}/{}/{}/{}", rule.owner, rule.name, s.owner, s.place, s.category),
        None => format!("{TOPIC_ROOT}/{}/{}", rule.owner, rule.name),
    };
    TopicName::parse(&topic).ok()
}

struct Engine {
    store: Arc<Store>,
    broker: Arc<Broker>,
    webhooks: Arc<webhook::Webhooks>,
    templates: Vec<TopicTemplate>,
    anonymous: bool,
    rules: Vec<ScopedRule>,
    states: HashMap<(i64, SensorKey), AlertState>,
    /// Each sensor's newest reading time, kept while there are rules (a rule that comes makes
    /// the engine read them all from the database: `catch_up`). Hashed with ahash: every
    /// committed reading is looked up here.
    last_seen: HashMap<SensorKey, TimestampMs, ahash::RandomState>,
    /// Per sensor, the indexes in `rules` of the rules over it (cleared when rules change).
    matching: HashMap<SensorKey, Vec<usize>, ahash::RandomState>,
}

struct ScopedRule {
    rule: AlertRule,
    /// An admin's rule (or any rule with `--allow-anonymous`): every sensor; else only the
    /// owner's.
    sees_all: bool,
}

/// Runs the engine until `stop`: stores the config file's rules, resumes the stored states,
/// then evaluates committed readings and the clock.
pub async fn run(
    store: Arc<Store>,
    broker: Arc<Broker>,
    webhooks: Arc<webhook::Webhooks>,
    config: AlertsConfig,
    inputs: AlertInputs,
    stop: CancellationToken,
) {
    let AlertInputs { mut commits, mut deletions, mut commands } = inputs;
    let mut commands_open = true;
    let mut engine = Engine {
        store,
        broker,
        webhooks,
        templates: config.templates,
        anonymous: config.anonymous,
        rules: Vec::new(),
        states: HashMap::new(),
        last_seen: HashMap::default(),
        matching: HashMap::default(),
    };
    // The database may be starting too: try until it answers.
    let mut delay = Duration::from_millis(200);
    loop {
        // What was committed before this point is in the database that `load` reads.
        drain(&mut commits);
        let started = async {
            // The rules and states as the last run left them first: a config file rule changed
            // or taken out since then resolves its firing alerts (history, webhook, notices), as
            // a change over the API does.
            // Their resolved events are stored (deleting those states with them) before the
            // config's rules are, so a failure or a crash in between loses none.
            engine.load_rules().await?;
            engine.load_states().await?;
            let ended = engine.end_config_rules_left_out_or_changed(&config.config_rules);
            engine.commit(ended, &stop).await;
            engine.store.sync_config_alert_rules(&config.config_rules).await?;
            engine.load(&stop).await
        };
        match started.await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "alerts: could not load rules and states; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    engine.reconcile_retained();
    tracing::info!(rules = engine.rules.len(), active = engine.states.len(), "alerts: evaluating");
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reload = tokio::time::interval_at(tokio::time::Instant::now() + RELOAD, RELOAD);
    loop {
        let changes = tokio::select! {
            _ = stop.cancelled() => break,
            committed = commits.recv() => match committed {
                Ok(batch) => engine.on_committed(&batch),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alerts: fell behind the commit feed; catching up from the database");
                    // Older batches still queued must not be evaluated over the newer values read.
                    drain(&mut commits);
                    engine.catch_up(None).await
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            command = commands.recv(), if commands_open => match command {
                Ok(Command::RulesChanged) | Err(broadcast::error::RecvError::Lagged(_)) => engine.rules_changed().await,
                Err(broadcast::error::RecvError::Closed) => {
                    commands_open = false;
                    Vec::new()
                }
            },
            deleted = deletions.recv() => match deleted {
                Ok(sensor) => engine.sensor_deleted(&sensor),
                Err(broadcast::error::RecvError::Lagged(_)) => engine.reload_states().await,
                Err(broadcast::error::RecvError::Closed) => Vec::new(),
            },
            _ = ticker.tick() => engine.on_tick(TimestampMs::now()),
            _ = reload.tick() => {
                let mut changes = engine.rules_changed().await;
                changes.extend(engine.forget_missing_sensors().await);
                changes
            }
        };
        engine.commit(changes, &stop).await;
    }
    tracing::info!("alerts: stopped");
}

/// Drops what is queued in `feed` (the caller reads the database instead).
fn drain<T: Clone>(feed: &mut broadcast::Receiver<T>) {
    while !matches!(feed.try_recv(), Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)) {}
}

/// A change of one rule's state for one sensor, before it is stored: with the rule as it was
/// (it may be changed or gone by the time the change is announced).
struct Pending {
    rule: Arc<AlertRule>,
    /// A webhook of a non-admin's rule ([`webhook::Webhooks::send`]).
    restricted: bool,
    sensor: SensorKey,
    change: Change,
    at: TimestampMs,
}

impl Engine {
    /// Rules, states and the sensors' last readings from the database.
    async fn load(&mut self, stop: &CancellationToken) -> Result<(), crate::store::StoreError> {
        // Which rules watch which sensor is by the rules' positions, which a new read may move.
        self.matching.clear();
        self.load_rules().await?;
        self.load_states().await?;
        let pending = self.catch_up(None).await;
        // What a crash interrupted between a commit and its alert: written now.
        self.commit(pending, stop).await;
        Ok(())
    }

    /// The states as stored, but those of rules that are gone or inactive (their owner
    /// removed): those are over, and deleted.
    async fn load_states(&mut self) -> Result<(), crate::store::StoreError> {
        self.states = self.store.alert_states().await?.into_iter().map(|(rule, sensor, state)| ((rule, sensor), state)).collect();
        let orphaned: HashSet<i64> =
            self.states.keys().map(|(rule, _)| *rule).filter(|id| !self.rules.iter().any(|r| r.rule.id == *id)).collect();
        for id in orphaned {
            self.store.delete_alert_states(id).await?;
        }
        self.states.retain(|(rule, _), _| self.rules.iter().any(|r| r.rule.id == *rule));
        Ok(())
    }

    /// The states as stored (after deletions this engine missed).
    async fn reload_states(&mut self) -> Vec<Pending> {
        if let Err(e) = self.load_states().await {
            tracing::warn!(error = %e, "alerts: could not read the states");
        }
        self.last_seen.clear();
        self.catch_up(None).await
    }

    async fn load_rules(&mut self) -> Result<(), crate::store::StoreError> {
        let mut rules = Vec::new();
        for rule in self.store.alert_rules().await? {
            // The config file's rules are the server's: they watch every sensor.
            let owner = if self.anonymous || rule.from_config { None } else { Some(self.store.user(&rule.owner).await?) };
            let sees_all = match owner {
                None => true,
                Some(Some(user)) => user.is_admin,
                Some(None) => {
                    // Its owner was removed: it watches nothing until they are back.
                    tracing::debug!(owner = %rule.owner, rule = %rule.name, "alert rule of a user that does not exist: inactive");
                    continue;
                }
            };
            rules.push(ScopedRule { rule, sees_all });
        }
        self.rules = rules;
        Ok(())
    }

    /// Every sensor's last reading, evaluated as if it arrived when it was taken (a reading
    /// committed just before a crash, or missed while lagging, moves its alerts now).
    async fn catch_up(&mut self, only: Option<&HashSet<i64>>) -> Vec<Pending> {
        if self.rules.is_empty() {
            // No rules, no sensor times kept (see `last_seen`).
            self.last_seen.clear();
            return Vec::new();
        }
        let sensors = match self.store.sensors().await {
            Ok(sensors) => sensors,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: could not read the sensors to catch up");
                return Vec::new();
            }
        };
        let now = TimestampMs::now();
        let mut changes = Vec::new();
        for sensor in sensors {
            let Some(seen) = sensor.last_seen else { continue };
            self.last_seen.insert(sensor.key.clone(), seen);
            if let Some(value) = sensor.last_value {
                self.evaluate(&sensor.key, value, seen, now, only, &mut changes);
            }
        }
        changes
    }

    fn on_committed(&mut self, batch: &Committed) -> Vec<Pending> {
        if self.rules.is_empty() {
            // Nothing to evaluate, and no sensor's time to keep: the first rule catches up.
            return Vec::new();
        }
        let now = TimestampMs::now();
        let mut changes = Vec::new();
        for reading in &batch.readings {
            // An older reading than the newest one seen (a backfill, a batch replayed after a
            // catch-up) is not the sensor's current value.
            match self.last_seen.get_mut(&reading.sensor) {
                Some(seen) if reading.ts < *seen => continue,
                Some(seen) => *seen = reading.ts,
                None => {
                    self.last_seen.insert(reading.sensor.clone(), reading.ts);
                }
            }
            self.evaluate(&reading.sensor, reading.value, reading.ts, now, None, &mut changes);
        }
        changes
    }

    /// A reading of `sensor` taken at `taken`, seen at `now`. A stale alert is over only for a
    /// reading taken after it went stale (not a backfilled or caught-up one).
    /// Only the rules in `only`, if given.
    fn evaluate(
        &mut self,
        sensor: &SensorKey,
        value: f64,
        taken: TimestampMs,
        now: TimestampMs,
        only: Option<&HashSet<i64>>,
        changes: &mut Vec<Pending>,
    ) {
        let age = now.0.saturating_sub(taken.0);
        for index in self.rules_over(sensor) {
            let rule = &self.rules[index].rule;
            if only.is_some_and(|ids| !ids.contains(&rule.id)) {
                continue;
            }
            // A reading too old to say anything about now: past FRESH for a threshold, past its
            // stale time for a stale rule (it would end the alert only for the next tick to fire
            // it again).
            let too_old = match rule.condition {
                Condition::Stale { after } => age > after.as_millis() as i64,
                _ => age > FRESH.as_millis() as i64,
            };
            if too_old {
                continue;
            }
            let key = (rule.id, sensor.clone());
            let at = taken.min(now);
            if let Some(change) = state::on_reading(rule, self.states.get(&key), value, at) {
                self.apply(index, sensor, change, at, changes);
            }
        }
    }

    /// Pending alerts whose hold time passed fire; with stale rules, silent sensors go stale.
    fn on_tick(&mut self, now: TimestampMs) -> Vec<Pending> {
        let mut due = Vec::new();
        for ((rule_id, sensor), state) in self.states.iter().filter(|(_, s)| s.status == AlertStatus::Pending) {
            let Some(index) = self.rules.iter().position(|r| r.rule.id == *rule_id) else { continue };
            if let Some(change) = state::on_tick(&self.rules[index].rule, Some(state), None, now) {
                due.push((index, sensor.clone(), change));
            }
        }
        let is_stale = |rule: &AlertRule| matches!(rule.condition, Condition::Stale { .. });
        if self.rules.iter().any(|r| is_stale(&r.rule)) {
            // Usually every sensor's rules were worked out when it was last evaluated.
            let unknown: Vec<SensorKey> = self.last_seen.keys().filter(|k| !self.matching.contains_key(*k)).cloned().collect();
            for sensor in unknown {
                self.rules_over(&sensor);
            }
            for (sensor, seen) in &self.last_seen {
                for &index in self.matching.get(sensor).into_iter().flatten() {
                    let rule = &self.rules[index].rule;
                    if !is_stale(rule) || self.states.contains_key(&(rule.id, sensor.clone())) {
                        continue;
                    }
                    if let Some(change) = state::on_tick(rule, None, Some(*seen), now) {
                        due.push((index, sensor.clone(), change));
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (index, sensor, change) in due {
            self.apply(index, &sensor, change, now, &mut changes);
        }
        changes
    }

    fn apply(&mut self, index: usize, sensor: &SensorKey, change: Change, at: TimestampMs, changes: &mut Vec<Pending>) {
        let key = (self.rules[index].rule.id, sensor.clone());
        let mut slot = self.states.remove(&key);
        state::apply(&mut slot, &change);
        if let Some(state) = slot {
            self.states.insert(key, state);
        }
        changes.push(self.pending(index, sensor, change, at));
    }

    fn pending(&self, index: usize, sensor: &SensorKey, change: Change, at: TimestampMs) -> Pending {
        let ScopedRule { rule, sees_all } = &self.rules[index];
        Pending { rule: Arc::new(rule.clone()), restricted: !sees_all, sensor: sensor.clone(), change, at }
    }

    /// The indexes of the rules whose filter matches one of `sensor`'s topics and whose owner
    /// may see it.
    fn rules_over(&mut self, sensor: &SensorKey) -> Vec<usize> {
        if let Some(found) = self.matching.get(sensor) {
            return found.clone();
        }
        let topics = TopicTemplate::topics_of(&self.templates, sensor);
        let found: Vec<usize> = (0..self.rules.len())
            .filter(|&i| {
                let ScopedRule { rule, sees_all } = &self.rules[i];
                (*sees_all || rule.owner == sensor.owner) && topics.iter().any(|t| rule.filter.matches(t))
            })
            .collect();
        self.matching.insert(sensor.clone(), found.clone());
        found
    }

    /// Reads the rules again; a changed or deleted rule's states start over (this engine is the
    /// only writer of states, so it deletes them), and known sensors are evaluated against
    /// changed and new rules at once.
    async fn rules_changed(&mut self) -> Vec<Pending> {
        let before: Vec<(AlertRule, bool)> = self.rules.iter().map(|r| (r.rule.clone(), r.sees_all)).collect();
        if let Err(e) = self.load_rules().await {
            tracing::warn!(error = %e, "alerts: could not read the changed rules");
            return Vec::new();
        }
        // The rules whose states start over: changed, deleted or new.
        let mut renewed = HashSet::new();
        let mut ended = Vec::new();
        for (old, old_sees_all) in &before {
            // Silencing changes nothing else.
            let same = self
                .rules
                .iter()
                .any(|r| AlertRule { silenced_until: old.silenced_until, ..r.rule.clone() } == *old && r.sees_all == *old_sees_all);
            if !same {
                renewed.insert(old.id);
                ended.extend(self.end_states_of(old, *old_sees_all));
                if let Err(e) = self.store.delete_alert_states(old.id).await {
                    tracing::warn!(error = %e, rule = %old.name, "alerts: could not delete a changed rule's states");
                }
            }
        }
        renewed.extend(self.rules.iter().map(|r| r.rule.id).filter(|id| !before.iter().any(|(old, _)| old.id == *id)));
        if renewed.is_empty() {
            // The same rules in the same order: which sensors each watches stays known (a silent
            // sensor is evaluated by the clock alone).
            return ended;
        }
        self.matching.clear();
        // Known sensors against the rules that changed or are new (the others' states stand).
        ended.extend(self.catch_up(Some(&renewed)).await);
        ended
    }

    /// Ends the states of `old`, a rule changed or deleted: a firing alert ends with the rule it
    /// belonged to, said so once (history, webhook, notice); its retained notices are cleared.
    fn end_states_of(&mut self, old: &AlertRule, sees_all: bool) -> Vec<Pending> {
        let firing: Vec<SensorKey> = self
            .states
            .iter()
            .filter(|((id, _), s)| *id == old.id && s.status == AlertStatus::Firing)
            .map(|((_, k), _)| k.clone())
            .collect();
        let rule = Arc::new(old.clone());
        let ended = firing
            .into_iter()
            .map(|sensor| Pending {
                rule: Arc::clone(&rule),
                restricted: !sees_all,
                sensor,
                change: Change::Resolved { value: None },
                at: TimestampMs::now(),
            })
            .collect();
        self.states.retain(|(rule, _), _| *rule != old.id);
        self.clear_retained(old);
        ended
    }

    /// At start, before the config file's rules are stored: ends the states of the stored
    /// rules they replace with a different rule (by owner and name; a silence alone is no
    /// change) and of the config rules no longer in the file, as
    /// `Store::sync_config_alert_rules` will.
    fn end_config_rules_left_out_or_changed(&mut self, config: &[AlertRule]) -> Vec<Pending> {
        let ends = |stored: &AlertRule| match config.iter().find(|c| c.owner == stored.owner && c.name == stored.name) {
            Some(new) => AlertRule { id: stored.id, silenced_until: stored.silenced_until, ..new.clone() } != *stored,
            None => stored.from_config,
        };
        let ending: Vec<(AlertRule, bool)> = self.rules.iter().filter(|r| ends(&r.rule)).map(|r| (r.rule.clone(), r.sees_all)).collect();
        ending.iter().flat_map(|(rule, sees_all)| self.end_states_of(rule, *sees_all)).collect()
    }

    /// A deleted sensor's alerts are over (the deletion removed their rows; a state written
    /// since, by a reading that raced the deletion, goes now).
    fn sensor_deleted(&mut self, sensor: &SensorKey) -> Vec<Pending> {
        self.last_seen.remove(sensor);
        self.matching.remove(sensor);
        let gone: Vec<i64> = self.states.keys().filter(|(_, s)| s == sensor).map(|(rule, _)| *rule).collect();
        let mut changes = Vec::new();
        for rule_id in gone {
            let Some(state) = self.states.remove(&(rule_id, sensor.clone())) else { continue };
            if let Some(index) = self.rules.iter().position(|r| r.rule.id == rule_id) {
                // A firing alert of a sensor that is gone is over: resolved (webhook, history).
                let change = if state.status == AlertStatus::Firing { Change::Resolved { value: None } } else { Change::Cancelled };
                changes.push(self.pending(index, sensor, change, TimestampMs::now()));
            }
        }
        changes
    }

    /// Sensors this engine knows that the database no longer has (deleted by a reading's
    /// race with the deletion message, or by another process) are forgotten, with their alerts.
    async fn forget_missing_sensors(&mut self) -> Vec<Pending> {
        let Ok(sensors) = self.store.sensors().await else { return Vec::new() };
        // MariaDB compares the sensors' levels without case: a board's `Kitchen` is the stored
        // `kitchen` there.
        let fold = self.store.dialect() == crate::store::Dialect::MySql;
        let comparable = |k: &SensorKey| {
            let f = |level: &str| if fold { level.to_lowercase() } else { level.to_owned() };
            (f(&k.owner), f(&k.place), f(&k.category))
        };
        let present: HashSet<(String, String, String)> = sensors.iter().map(|s| comparable(&s.key)).collect();
        let missing: Vec<SensorKey> = self.last_seen.keys().filter(|k| !present.contains(&comparable(k))).cloned().collect();
        missing.iter().flat_map(|sensor| self.sensor_deleted(sensor)).collect()
    }

    /// Stores `changes` (retrying until the database takes them, or shutdown), then
    /// announces the firing and resolved ones.
    async fn commit(&mut self, changes: Vec<Pending>, stop: &CancellationToken) {
        if changes.is_empty() {
            return;
        }
        let writes: Vec<AlertWrite> = changes.iter().map(|p| self.write_of(p)).collect();
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.store.write_alerts(&writes).await {
            tracing::warn!(error = %e, changes = writes.len(), retry_in = ?delay, "alerts: could not store state changes; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // At start a crash's catch-up redoes these.
                _ = stop.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        for pending in &changes {
            self.announce(pending);
        }
    }

    fn write_of(&self, pending: &Pending) -> AlertWrite {
        let rule = &pending.rule;
        let state = self.states.get(&(rule.id, pending.sensor.clone())).cloned();
        let event = |kind: &str, value| AlertEvent {
            id: 0,
            at: pending.at,
            rule_id: rule.id,
            rule_owner: rule.owner.clone(),
            rule_name: rule.name.clone(),
            sensor: pending.sensor.clone(),
            state: kind.into(),
            severity: rule.severity,
            value,
            by: None,
        };
        let event = match &pending.change {
            Change::Fired(s) => Some(event("firing", s.value)),
            Change::Resolved { value } => Some(event("resolved", *value)),
            Change::Pending(_) | Change::Cancelled => None,
        };
        AlertWrite { rule: rule.id, sensor: pending.sensor.clone(), state, event }
    }

    fn announce(&self, pending: &Pending) {
        let rule = &pending.rule;
        let (state, value, since) = match &pending.change {
            Change::Fired(s) => ("firing", s.value, s.since),
            Change::Resolved { value } => ("resolved", *value, pending.at),
            Change::Pending(_) | Change::Cancelled => return,
        };
        tracing::info!(owner = %rule.owner, rule = %rule.name, sensor = %pending.sensor, state, ?value, "alert");
        let body = notice(rule, Some(&pending.sensor), state, value, since, None).body();
        // The retained topics are the rule's as it is now: a deleted or changed rule's were
        // cleared, a deleted sensor's goes.
        let rule_stands = self.rules.iter().any(|r| r.rule.id == rule.id && r.rule.owner == rule.owner && r.rule.name == rule.name);
        if rule_stands {
            let sensor_stands = self.last_seen.contains_key(&pending.sensor);
            let payload = if sensor_stands { body.clone() } else { Bytes::new() };
            self.publish_retained(alert_topic(rule, Some(&pending.sensor)), payload);
            self.publish_summary(rule, Some((&pending.sensor, value, since)));
        }
        let silenced = rule.silenced_until.is_some_and(|until| until > TimestampMs::now());
        if let (Some(url), false) = (&rule.webhook, silenced) {
            self.webhooks.send(url, body, pending.restricted);
        }
    }

    /// `roost/alerts/<owner>/<rule>`: whether any of its sensors fires, with the latest change
    /// (or, without one, a firing sensor's; with neither it is left as it is).
    fn publish_summary(&self, rule: &AlertRule, latest: Option<(&SensorKey, Option<f64>, TimestampMs)>) {
        let firing: Vec<(&SensorKey, &AlertState)> = self
            .states
            .iter()
            .filter(|((id, _), s)| *id == rule.id && s.status == AlertStatus::Firing)
            .map(|((_, sensor), s)| (sensor, s))
            .collect();
        let state = if firing.is_empty() { "resolved" } else { "firing" };
        // While others fire, the summary shows one of those rather than a sensor that resolved.
        let latest = latest.filter(|(sensor, _, _)| firing.is_empty() || firing.iter().any(|(k, _)| k == sensor));
        let topic = alert_topic(rule, None);
        let Some((sensor, value, since)) = latest.or_else(|| firing.first().map(|(sensor, s)| (*sensor, s.value, s.since))) else {
            // Its last firing sensor was deleted, or a crash lost the resolved summary.
            if topic.as_ref().and_then(|t| self.broker.retained(t)).is_some_and(|m| says_firing(&m.payload)) {
                self.publish_retained(topic, notice(rule, None, "resolved", None, TimestampMs::now(), Some(0)).body());
            }
            return;
        };
        self.publish_retained(topic, notice(rule, Some(sensor), state, value, since, Some(firing.len())).body());
    }

    fn publish_retained(&self, topic: Option<TopicName>, payload: Bytes) {
        if let Some(topic) = topic {
            self.broker.publish(Message::new(topic, payload, QoS::AtLeastOnce, true));
        }
    }

    /// Deletes the retained messages of a rule that is gone or changed.
    fn clear_retained(&self, rule: &AlertRule) {
        let filter = format!("{TOPIC_ROOT}/{}/{}/#", rule.owner, rule.name);
        let Ok(filter) = TopicFilter::parse(&filter) else { return };
        for message in self.broker.retained_matching(&filter) {
            self.publish_retained(Some(message.topic.clone()), Bytes::new());
        }
    }

    /// After a restart the retained alert messages are the broker's, stored separately: one
    /// of a rule that is gone is cleared, and a per-sensor one that says `firing` where the
    /// database's state does not (a crash between the two commits, a sensor deleted meanwhile)
    /// too. Firing states are announced again; resolved notices stay.
    fn reconcile_retained(&self) {
        let Ok(all) = TopicFilter::parse(&format!("{TOPIC_ROOT}/#")) else { return };
        let firing_topics: HashSet<TopicName> = self
            .states
            .iter()
            .filter(|(_, s)| s.status == AlertStatus::Firing)
            .filter_map(|((id, sensor), _)| self.rules.iter().find(|r| r.rule.id == *id).and_then(|r| alert_topic(&r.rule, Some(sensor))))
            .collect();
        for message in self.broker.retained_matching(&all) {
            let topic = message.topic.as_str();
            let of_a_rule = self.rules.iter().any(|r| {
                let summary = format!("{TOPIC_ROOT}/{}/{}", r.rule.owner, r.rule.name);
                topic == summary || topic.starts_with(&format!("{summary}/"))
            });
            let is_summary = self.rules.iter().any(|r| alert_topic(&r.rule, None).as_ref() == Some(&message.topic));
            let stale_firing = !is_summary && says_firing(&message.payload) && !firing_topics.contains(&message.topic);
            if !of_a_rule || stale_firing {
                self.publish_retained(Some(message.topic.clone()), Bytes::new());
            }
        }
        for scoped in &self.rules {
            let rule = &scoped.rule;
            for ((_, sensor), s) in self.states.iter().filter(|((id, _), s)| *id == rule.id && s.status == AlertStatus::Firing) {
                self.publish_retained(alert_topic(rule, Some(sensor)), notice(rule, Some(sensor), "firing", s.value, s.since, None).body());
            }
            self.publish_summary(rule, None);
        }
    }
}

/// Whether a retained notice says `firing`.
fn says_firing(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|v| v["state"] == "firing")
}

fn notice<'a>(
    rule: &'a AlertRule,
    sensor: Option<&'a SensorKey>,
    state: &'static str,
    value: Option<f64>,
    since: TimestampMs,
    firing: Option<usize>,
) -> Notice<'a> {
    Notice {
        state,
        severity: rule.severity.as_str(),
        rule: &rule.name,
        owner: &rule.owner,
        sensor: sensor.map(|s| SensorJson { owner: &s.owner, place: &s.place, category: &s.category }),
        value,
        since: since.0,
        firing,
    }
}

impl Notice<'_> {
    fn body(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a notice serializes"))
    }
}
