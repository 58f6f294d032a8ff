//! The `Engine` facade and its builder: the one type an embedding application uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use semver::VersionReq;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::EngineError;
use crate::instance::{InstanceFilter, InstanceInfo, Outcome};
use crate::migrate::{
    MigrationHandle, MigrationJob, MovePlan, MoveReport, MoveRequest, RevivePlan, ReviveReport, ReviveRequest,
    StateMigration, StepMapping,
};
use crate::observe::{Clock, Event, MetricsSnapshot, SystemClock};
use crate::parts::{Extensions, Parts};
use crate::registry::{VersionInfo, VersionStatus};
use crate::runtime::{Definitions, Durability, EndRequest, RolloutOperation, Runtime, RuntimeOptions};
use crate::store::{AppliedConfig, CorruptRecord, Op, Store, StoreStats, WorkerInfo};
use strata_config::{ConfigError, ScheduleSpec};
use strata_core::instance::{InstanceId, ScheduledFire, VersionKey};
use strata_core::rollout::{RolloutRecord, RolloutSpec};
use strata_core::routing::{RoutingSpec, VersionRequest};
use strata_core::workflow::{VersionCode, WorkflowVersion};

/// How to start an instance besides its workflow and input.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    routing_key: Option<String>,
    version: Option<String>,
    attributes: Vec<(String, String)>,
}

impl StartOptions {
    /// Default options: newest active version, routing key = instance id.
    pub fn new() -> Self {
        StartOptions::default()
    }

    /// The key sticky routing hashes (a customer id, say); recorded on the instance.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// An attribute of this start (`tenant` = `acme`, say) that flag and rollout segments match.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// A semver requirement the version must meet (`^1`, `>=1.1, <2`, `=1.0.0` for exact). Note
    /// that a bare `1.0.0` means `^1.0.0`, as in Cargo.
    pub fn version(mut self, requirement: impl Into<String>) -> Self {
        self.version = Some(requirement.into());
        self
    }
}

/// Opens a store; run off the async executor, since backends block while they open.
pub type StoreOpening = Box<dyn FnOnce() -> Result<Arc<dyn Store>, crate::store::StoreError> + Send>;

/// What a part does once the engine is open.
pub type PartStart = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send>>;

/// A part of an engine's setup that lives in a crate above the engine: the store backend to
/// open, what runs beside the engine (the admin server). The engine names neither; the umbrella
/// crate `strata` offers them as builder methods. The builder collects a part's settings in any
/// order ([`EngineBuilder::part`]); at `open` it checks every part before anything opens, takes
/// the store from the part that opens one, and starts each part once the engine runs. What a
/// part leaves for later (the address a server bound) it keeps with the engine
/// ([`Engine::set_extension`]). Each method has a default that does nothing.
pub trait EnginePart: Send + 'static {
    /// Checks the settings as a whole; `open` fails with this error before anything opens.
    fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// The store this part opens, if it opens one (refused, with
    /// [`EngineError::StoreGivenTwice`], if [`EngineBuilder::store`] gave one too).
    fn store_opening(&mut self) -> Option<StoreOpening> {
        None
    }

    /// Starts what runs beside the engine (before the config file is first applied); an error
    /// shuts the engine down and `open` returns it.
    fn start(self: Box<Self>, engine: Engine) -> PartStart {
        let _ = engine;
        Box::pin(async { Ok(()) })
    }
}

/// Configures and opens an [`Engine`].
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    parts: Parts<dyn EnginePart>,
    codes: Vec<Result<Arc<dyn VersionCode>, EngineError>>,
    migrations: Vec<StateMigration>,
    step_mappings: Vec<StepMapping>,
    config_file: Option<PathBuf>,
    schedule_grace: Duration,
    options: RuntimeOptions,
}

impl EngineBuilder {
    /// The store to open the engine on (an opened backend, or one of your own); the umbrella
    /// crate `strata` also offers `data_dir` (the embedded sled store) and `postgres`.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Changes the settings of a part of the setup that lives above the engine (a backend to
    /// open, a server to start beside it; see [`EnginePart`]): created from `P::default()` on
    /// first use, kept across calls in any order, checked, opened and started at `open`.
    pub fn part<P: EnginePart + Default>(mut self, change: impl FnOnce(&mut P)) -> Self {
        self.parts.change(|part| part, change);
        self
    }

    /// When step commits are acknowledged (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.options.durability = durability;
        self
    }

    /// How many steps may run at once across all instances (default 256).
    pub fn max_concurrent_steps(mut self, limit: usize) -> Self {
        self.options.max_concurrent_steps = limit;
        self
    }

    /// Whether live instances of versions whose code is not registered are parked until it is
    /// (`true`), or make `open` fail naming them (`false`, the default).
    pub fn park_unregistered(mut self, park: bool) -> Self {
        self.options.park_unregistered = park;
        self
    }

    /// How long to wait before retrying a step whose commit failed (default 500 ms).
    pub fn commit_retry_delay(mut self, delay: Duration) -> Self {
        self.options.commit_retry_delay = delay;
        self
    }

    /// How many events a slow subscriber may fall behind before it is told it lagged (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.options.event_capacity = capacity;
        self
    }

    /// A config file to apply at open and to watch while the engine runs (see
    /// [`Engine::watch_config_file`]); `open` fails if it cannot be applied.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// How late a schedule's fire time may be before it counts as missed (default 2 s): missed
    /// fires follow the schedule's `missed` policy, fires within the grace period always start.
    pub fn schedule_grace(mut self, grace: Duration) -> Self {
        self.schedule_grace = grace;
        self
    }

    /// Registers a workflow version before open.
    pub fn register<I, S, O>(mut self, version: WorkflowVersion<I, S, O>) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        S: Serialize + DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.codes.push(version.into_code().map_err(EngineError::from));
        self
    }

    /// Whether per-version metrics are recorded (default on; off only to measure their cost).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.options.metrics = enabled;
        self
    }

    /// The engine's clock (default the system clock): durable sleeps, signal timeouts, retry
    /// backoff, schedules, metrics windows and rollout holds all read it. A
    /// [`ManualClock`](crate::ManualClock) lets tests pass days of workflow time at once. With it,
    /// commit retries after a store failure also wait for the clock to be advanced.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.options.clock = clock;
        self
    }

    /// With a store many processes share (PostgreSQL): how long this worker's claims on its
    /// instances last without a heartbeat (default 5 s; it heartbeats every third of that). When
    /// a worker dies, the others take its instances over once its lease has run out.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.options.lease = lease;
        self
    }

    /// How long finished instances (completed, failed, cancelled) are kept after they finish
    /// before they are removed, in the background (default 7 days; zero keeps them forever). A
    /// config file's `retention = "30d"` takes over when applied. Counters are not affected.
    pub fn retention(mut self, period: Duration) -> Self {
        self.options.retention = period;
        self
    }

    /// How many entries each instance's history keeps (default 1 000, at least 16): beyond it
    /// the oldest after the first 8 (with the start) are dropped and counted, 64 at a time (8 at a
    /// time for a bound under about 64, whose history never stores 64 to drop at once).
    pub fn history_limit(mut self, entries: u32) -> Self {
        self.options.history_limit = entries.max(strata_core::history::MIN_HISTORY_LIMIT);
        self
    }

    /// How far ahead an idle instance must be due to stay in memory (default 30 s): one asleep,
    /// backing off or waiting for a signal beyond it is evicted — its record stays in the store,
    /// indexed by when it is due — and loaded again ahead of its timer, or when a signal, a
    /// cancel, an awaited outcome, a move or a migration needs it. `Duration::MAX` keeps every
    /// live instance in memory.
    pub fn residency_horizon(mut self, horizon: Duration) -> Self {
        self.options.residency_horizon = horizon;
        self
    }

    /// Registers a state migration; `open` fails if the migrations of a workflow skip a schema,
    /// have a hole, or give two paths for one step.
    pub fn migration(mut self, migration: StateMigration) -> Self {
        self.migrations.push(migration);
        self
    }

    /// Registers how steps map between two versions, for moves where a step was renamed.
    pub fn step_mapping(mut self, mapping: StepMapping) -> Self {
        self.step_mappings.push(mapping);
        self
    }

    /// Checks every part's settings, opens the store, recovers every live instance, starts
    /// running them, then starts the parts and applies the config file.
    pub async fn open(self) -> Result<Engine, EngineError> {
        let mut parts = self.parts.into_parts();
        for part in &parts {
            part.check()?;
        }
        let codes = self.codes.into_iter().collect::<Result<Vec<_>, _>>()?;
        let definitions = Definitions {
            codes,
            migrations: self.migrations,
            step_mappings: self.step_mappings,
        };
        let opening = parts.iter_mut().find_map(|part| part.store_opening());
        let store: Arc<dyn Store> = match (self.store, opening) {
            (Some(_), Some(_)) => return Err(EngineError::StoreGivenTwice),
            (Some(store), None) => store,
            (None, Some(opening)) => open_blocking(opening).await?,
            (None, None) => return Err(EngineError::NoStore),
        };
        let runtime = Runtime::open(store, definitions, self.options).await?;
        let (schedules, schedules_in_force) = tokio::sync::watch::channel(Arc::new(Vec::new()));
        let engine = Engine {
            runtime,
            extensions: Arc::default(),
            config: Arc::new(tokio::sync::Mutex::new(ConfigInForce::default())),
            schedules: Arc::new(schedules),
        };
        engine.reinstall_last_config().await?;
        let stop = engine.runtime.stop_signal();
        engine.runtime.spawn_tracked(crate::tasks::scheduler::run(
            engine.clone(),
            schedules_in_force,
            stop,
            self.schedule_grace,
        ));
        let stop = engine.runtime.stop_signal();
        let interval = (engine.runtime.lease() / 3).max(Duration::from_millis(10));
        engine
            .runtime
            .spawn_tracked(crate::tasks::follow::run(engine.clone(), interval, stop));
        for part in parts {
            if let Err(error) = part.start(engine.clone()).await {
                engine.clone().shutdown().await;
                return Err(error);
            }
        }
        if let Some(path) = self.config_file {
            if let Err(error) = engine.watch_config_file(path, Duration::from_secs(1)).await {
                engine.clone().shutdown().await;
                return Err(error);
            }
        }
        Ok(engine)
    }
}

/// Opens a store off the async executor (both backends block while they open).
async fn open_blocking(open: StoreOpening) -> Result<Arc<dyn Store>, EngineError> {
    let opened = tokio::task::spawn_blocking(open)
        .await
        .map_err(|error| crate::store::StoreError::failed("open", error))??;
    Ok(opened)
}

/// The config in force: its generation (0: none yet) and its text.
#[derive(Default)]
struct ConfigInForce {
    generation: u64,
    text: Option<String>,
}

fn read_config_text(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// A durable workflow engine: starts, signals, cancels and inspects instances, and manages the
/// versions they are pinned to. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    runtime: Arc<Runtime>,
    /// What the parts above the engine keep with it (the admin server's address).
    extensions: Arc<Extensions>,
    /// The config in force; the lock orders config changes.
    config: Arc<tokio::sync::Mutex<ConfigInForce>>,
    /// The schedules of the config in force, followed by the scheduler task.
    schedules: Arc<tokio::sync::watch::Sender<Arc<Vec<ScheduleSpec>>>>,
}

fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, EngineError> {
    strata_core::workflow::encode_user(value).map_err(|reason| EngineError::Encode { what, reason })
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            store: None,
            parts: Parts::default(),
            codes: Vec::new(),
            migrations: Vec::new(),
            step_mappings: Vec::new(),
            config_file: None,
            schedule_grace: Duration::from_secs(2),
            options: RuntimeOptions {
                durability: Durability::Sync,
                max_concurrent_steps: 256,
                park_unregistered: false,
                commit_retry_delay: Duration::from_millis(500),
                event_capacity: 4096,
                metrics: true,
                clock: Arc::new(SystemClock),
                lease: Duration::from_secs(5),
                retention: crate::runtime::DEFAULT_RETENTION,
                history_limit: strata_core::history::DEFAULT_HISTORY_LIMIT,
                residency_horizon: crate::runtime::DEFAULT_RESIDENCY_HORIZON,
            },
        }
    }

    /// Registers a workflow version while running; resumes instances parked for it.
    pub fn register<I, S, O>(&self, version: WorkflowVersion<I, S, O>) -> Result<VersionKey, EngineError>
    where
        I: DeserializeOwned + Send + 'static,
        S: Serialize + DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.runtime.register(version.into_code()?)
    }

    /// Starts an instance of `workflow` on its newest active version.
    pub async fn start<I: Serialize + ?Sized>(&self, workflow: &str, input: &I) -> Result<InstanceId, EngineError> {
        self.start_with(workflow, input, StartOptions::default()).await
    }

    /// Starts an instance with options (routing key, version requirement).
    pub async fn start_with<I: Serialize + ?Sized>(
        &self,
        workflow: &str,
        input: &I,
        options: StartOptions,
    ) -> Result<InstanceId, EngineError> {
        let request = match &options.version {
            None => VersionRequest::Newest,
            Some(text) => {
                VersionRequest::Matching(VersionReq::parse(text).map_err(|error| EngineError::InvalidVersion {
                    workflow: workflow.to_string(),
                    expected: "version requirement (like ^1, >=1.1, <2 or =1.0.0)",
                    version: text.clone(),
                    reason: error.to_string(),
                })?)
            }
        };
        let input = encode("input", input)?;
        let workflow = workflow.to_string();
        self.to_completion("start", move |engine| async move {
            engine
                .runtime
                .start(
                    &workflow,
                    &input,
                    &request,
                    options.routing_key,
                    &options.attributes,
                    None,
                )
                .await
        })
        .await
    }

    /// Runs an operation of this engine to its end as a task of its own: a caller that stops
    /// waiting for it (drops the future, times out) cannot cut it between its commit and the
    /// memory change that follows, so a start, a signal or a config either leaves no trace or
    /// takes full effect.
    async fn to_completion<T, Work>(
        &self,
        operation: &'static str,
        work: impl FnOnce(Engine) -> Work,
    ) -> Result<T, EngineError>
    where
        T: Send + 'static,
        Work: std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        self.runtime.to_completion(operation, work(self.clone())).await
    }

    /// Replaces the routing rules (flags, per-workflow defaults and rollouts) after checking them
    /// against the registered versions; invalid rules change nothing. Rules set this way are not
    /// kept in the config history; prefer [`Engine::apply_config`] for operator changes.
    pub fn set_routing(&self, spec: RoutingSpec) -> Result<(), EngineError> {
        self.runtime.set_routing(spec)
    }

    /// Parses config text (the `strata.toml` format), checks its rules against the registered
    /// versions and applies them; `source` names it in messages and history. An invalid config
    /// changes nothing. Each applied config that differs from the one in force is stored with the
    /// next generation number; returns the generation in force afterwards.
    pub async fn apply_config(&self, source: &str, text: &str) -> Result<u64, EngineError> {
        let (source, text) = (source.to_string(), text.to_string());
        self.to_completion("apply_config", move |engine| async move {
            engine.apply_config_now(&source, &text).await
        })
        .await
    }

    /// `apply_config` in the caller's task.
    async fn apply_config_now(&self, source: &str, text: &str) -> Result<u64, EngineError> {
        let mut in_force = self.config.lock().await;
        let before = self.runtime.routing_spec();
        let applied = self.apply_config_locked(&mut in_force, source, text).await;
        match &applied {
            Ok(generation) => {
                let changes = strata_core::routing::describe_changes(&before, &self.runtime.routing_spec());
                tracing::info!(source, generation, ?changes, "config applied");
                let event = Event::ConfigApplied {
                    source: source.to_string(),
                    generation: *generation,
                    changes,
                };
                self.emit(event);
            }
            Err(error) => self.announce_rejection(source, error.to_string()),
        }
        applied
    }

    /// Checks a config file's text as [`Engine::apply_config`] would — syntax, structure, and
    /// its schedules, routing rules and rollouts against the versions registered now — without
    /// applying it. Returns the error `apply_config` would give.
    pub fn check_config(&self, source: &str, text: &str) -> Result<(), EngineError> {
        self.checked_config(source, text).map(|_| ())
    }

    /// A config file's text parsed and checked against the registered versions, with its
    /// rollouts not yet known.
    fn checked_config(
        &self,
        source: &str,
        text: &str,
    ) -> Result<(strata_config::Config, Vec<RolloutSpec>), EngineError> {
        let config = strata_config::parse(source, text)?;
        for (index, schedule) in config.schedules.iter().enumerate() {
            if !self.runtime.registry.knows_workflow(&schedule.workflow) {
                return Err(ConfigError::Schedule {
                    file: source.to_string(),
                    key: format!("schedules[{index}].workflow"),
                    reason: format!("no version of workflow '{}' is registered", schedule.workflow),
                }
                .into());
            }
        }
        let new_rollouts = self.check_config_rollouts(source, &config.rollouts)?;
        self.runtime
            .check_routing(&config.routing, true)
            .map_err(|error| match error {
                EngineError::Routing(rules) => ConfigError::Rules {
                    file: source.to_string(),
                    source: rules,
                }
                .into(),
                other => other,
            })?;
        Ok((config, new_rollouts))
    }

    async fn apply_config_locked(
        &self,
        in_force: &mut ConfigInForce,
        source: &str,
        text: &str,
    ) -> Result<u64, EngineError> {
        let (config, new_rollouts) = self.checked_config(source, text)?;
        let spec = config.routing;
        // Compared with the config in force in the cluster, not this process's last view.
        if let Some(latest) = self.runtime.store.latest_config()? {
            if latest.generation > in_force.generation {
                in_force.generation = latest.generation;
                in_force.text = Some(latest.text);
            }
        }
        // Each change gets the next generation; if another process sharing the store took it
        // meanwhile, this one is numbered after that (or is that one already).
        let mut attempts = 0;
        while in_force.text.as_deref() != Some(text) {
            let record = AppliedConfig {
                generation: in_force.generation + 1,
                source: source.to_string(),
                text: text.to_string(),
                applied_at_ms: self.now_ms(),
            };
            match self.runtime.commit(vec![Op::PutConfig(record)]).await {
                Ok(()) => {
                    in_force.generation += 1;
                    in_force.text = Some(text.to_string());
                }
                Err(EngineError::Store(crate::store::StoreError::ConfigTaken { generation })) if attempts < 8 => {
                    attempts += 1;
                    tracing::info!(
                        generation,
                        "another process applied a config meanwhile; numbering this one after it"
                    );
                    if let Some(latest) = self.runtime.store.latest_config()? {
                        in_force.generation = latest.generation;
                        in_force.text = Some(latest.text);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        self.runtime.install_routing(spec);
        self.schedules.send_replace(Arc::new(config.schedules));
        if let Some(period) = config.retention {
            self.runtime.set_retention(period);
        }
        for rollout in new_rollouts {
            let name = rollout.name.clone();
            if let Err(error) = self.runtime.start_rollout(rollout).await {
                tracing::warn!(rollout = %name, %error, "a rollout of the applied config did not start");
            }
        }
        Ok(in_force.generation)
    }

    /// The config's rollouts not yet known by name, checked against what is registered; a
    /// rollout already known (running or finished) is left as it is.
    fn check_config_rollouts(&self, source: &str, rollouts: &[RolloutSpec]) -> Result<Vec<RolloutSpec>, EngineError> {
        let known = self.runtime.rollouts();
        let mut new = Vec::new();
        for (index, spec) in rollouts.iter().enumerate() {
            if known.iter().any(|record| record.spec.name == spec.name) {
                continue;
            }
            for (field, version) in [("candidate", &spec.candidate), ("stable", &spec.stable)] {
                let key = VersionKey::new(spec.workflow.clone(), version.clone());
                if !self.runtime.registry.is_registered(&key) {
                    return Err(ConfigError::Rollout {
                        file: source.to_string(),
                        key: format!("rollouts[{index}].{field}"),
                        reason: format!(
                            "{key} is not registered; known: {}",
                            self.runtime.registry.describe_workflow(&spec.workflow)
                        ),
                    }
                    .into());
                }
            }
            self.runtime
                .check_measure_gates(spec)
                .map_err(|error| ConfigError::Rollout {
                    file: source.to_string(),
                    key: format!("rollouts[{index}].{}", error.field()),
                    reason: error.to_string(),
                })?;
            new.push(spec.clone());
        }
        Ok(new)
    }

    /// Puts the last applied config back in force at open: the last known good one survives
    /// restarts. Rules that no longer fit the registered versions are left out.
    async fn reinstall_last_config(&self) -> Result<(), EngineError> {
        self.follow_stored_config().await.map(|_| ())
    }

    /// Puts the store's newest config in force if it is newer than the one in force here (at
    /// open, and with a shared store whenever another process applied one). It was validated
    /// where it was applied; rules this process cannot follow (a version it has no code for)
    /// are left out. Returns the generation taken in, if any.
    pub(crate) async fn follow_stored_config(&self) -> Result<Option<u64>, EngineError> {
        let mut in_force = self.config.lock().await;
        let Some(last) = self.runtime.store.latest_config()? else {
            return Ok(None);
        };
        if last.generation <= in_force.generation {
            return Ok(None);
        }
        let config = strata_config::parse(&last.source, &last.text)?;
        self.runtime.check_routing(&config.routing, false)?;
        in_force.generation = last.generation;
        in_force.text = Some(last.text.clone());
        self.runtime.install_routing(config.routing);
        self.schedules.send_replace(Arc::new(config.schedules));
        if let Some(period) = config.retention {
            self.runtime.set_retention(period);
        }
        tracing::info!(generation = last.generation, source = %last.source, "config taken in from the store");
        Ok(Some(last.generation))
    }

    /// The schedules of the config in force.
    pub fn schedules(&self) -> Vec<ScheduleSpec> {
        self.schedules.borrow().as_ref().clone()
    }

    /// The rules that route new instances now: the config's (or `set_routing`'s) with every
    /// rollout laid over them — a running rollout's stage, a promoted candidate as the default,
    /// a rolled-back one left out.
    pub fn routing_in_force(&self) -> RoutingSpec {
        self.runtime.routing_in_force()
    }

    /// Each schedule's last handled fire time (ms since the Unix epoch).
    pub fn schedule_fires(&self) -> Result<Vec<(String, u64)>, EngineError> {
        Ok(self.runtime.store.schedule_fires()?)
    }

    /// Every config applied to this store, oldest generation first.
    pub fn config_history(&self) -> Result<Vec<AppliedConfig>, EngineError> {
        Ok(self.runtime.store.config_history()?)
    }

    /// Applies an earlier generation's config again (checked against the versions registered
    /// now); it becomes the newest generation. Returns that generation.
    pub async fn restore_config(&self, generation: u64) -> Result<u64, EngineError> {
        let history = self.config_history()?;
        let Some(record) = history.into_iter().find(|record| record.generation == generation) else {
            return Err(ConfigError::UnknownGeneration { generation }.into());
        };
        let source = format!("{} (restored generation {generation})", record.source);
        self.to_completion("restore_config", move |engine| async move {
            let applied = engine.apply_config_now(&source, &record.text).await?;
            engine.emit(Event::ConfigRestored {
                restored: generation,
                generation: applied,
            });
            Ok(applied)
        })
        .await
    }

    /// Reads a config file and applies it like [`Engine::apply_config`].
    pub async fn apply_config_file(&self, path: impl AsRef<std::path::Path>) -> Result<u64, EngineError> {
        let path = path.as_ref();
        let text = read_config_text(path)?;
        self.apply_config(&path.display().to_string(), &text).await
    }

    /// Applies a config file now and then whenever its content changes, until shutdown: change
    /// notification with a `poll_interval` polling fallback. Fails, watching nothing, if the file
    /// cannot be applied now; later invalid edits are rejected with a `ConfigRejected` event and
    /// the config in force stays.
    pub async fn watch_config_file(
        &self,
        path: impl Into<std::path::PathBuf>,
        poll_interval: Duration,
    ) -> Result<(), EngineError> {
        let path = path.into();
        let text = read_config_text(&path)?;
        self.apply_config(&path.display().to_string(), &text).await?;
        // What was applied, read once: an edit made after this read is seen by the watcher.
        let applied = Some(text.into_bytes());
        let stop = self.runtime.stop_signal();
        self.runtime.spawn_tracked(crate::tasks::watch::watch_file(
            self.clone(),
            path,
            applied,
            poll_interval,
            stop,
        ));
        Ok(())
    }

    /// Starts the instance of a schedule's fire time; its start and the fire are one commit.
    pub(crate) async fn start_scheduled(
        &self,
        schedule: &ScheduleSpec,
        fire_ms: u64,
    ) -> Result<InstanceId, EngineError> {
        let fire = ScheduledFire {
            schedule: schedule.name.clone(),
            fire_ms,
        };
        let request = VersionRequest::Newest;
        let routing_key = schedule.routing_key.clone();
        self.runtime
            .start(
                &schedule.workflow,
                &schedule.input,
                &request,
                routing_key,
                &[],
                Some(fire),
            )
            .await
    }

    /// The routing rules in force.
    pub(crate) fn routing_spec(&self) -> strata_core::routing::RoutingSpec {
        self.runtime.routing_spec()
    }

    /// Now on the engine's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.runtime.now()
    }

    /// The engine's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        self.runtime.clock()
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.runtime.store
    }

    /// Keeps `value` with the engine for whoever holds it, one per type, replacing an earlier
    /// one: how a part above the engine (the admin server) leaves what it learned at start.
    pub fn set_extension<T: Send + Sync + 'static>(&self, value: T) {
        self.extensions.set(value);
    }

    /// The value of type `T` kept with [`Engine::set_extension`], if any.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.get()
    }

    /// A receiver that turns true when shutdown begins: a task of yours that runs beside the
    /// engine stops on it.
    pub fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.runtime.stop_signal()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.runtime.is_stopping()
    }

    /// Spawns a task that [`Engine::shutdown`] waits for (it should end on
    /// [`Engine::stop_signal`]).
    pub fn spawn_tracked(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn_tracked(task);
    }

    /// Whether the store answers a read now: what a readiness probe asks.
    pub fn check_store(&self) -> Result<(), EngineError> {
        self.runtime.store.versions()?;
        Ok(())
    }

    /// Whether this process has code for some version of `workflow`.
    pub(crate) fn has_code_for(&self, workflow: &str) -> bool {
        self.runtime.registry.has_code_for(workflow)
    }

    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        self.runtime.commit(ops).await
    }

    /// Logs and announces a config that did not take effect.
    pub(crate) fn announce_rejection(&self, source: &str, reason: String) {
        tracing::error!(source, %reason, "config rejected; the config in force stays");
        self.emit(Event::ConfigRejected {
            source: source.to_string(),
            reason,
        });
    }

    pub(crate) fn emit(&self, event: Event) {
        self.runtime.events.emit(event);
    }

    /// Instances started since open per version and why they got it (caller's requirement, a
    /// rollout rule, the default, or the newest version), sorted by version.
    pub fn routing_counts(&self) -> Vec<(VersionKey, strata_core::routing::RouteReason, u64)> {
        self.runtime.routing_counts()
    }

    /// Sends a signal; it is stored durably and consumed when the instance waits for `name`.
    pub async fn signal<P: Serialize + ?Sized>(
        &self,
        id: InstanceId,
        name: &str,
        payload: &P,
    ) -> Result<(), EngineError> {
        let payload = encode("signal payload", payload)?;
        let name = name.to_string();
        self.to_completion("signal", move |engine| async move {
            engine.runtime.signal(id, &name, payload).await
        })
        .await
    }

    /// Cancels a live instance at its next step boundary; resolves once that is committed.
    pub async fn cancel(&self, id: InstanceId) -> Result<(), EngineError> {
        self.runtime.end(id, EndRequest::Cancel).await
    }

    /// Terminates a live instance at once, without running another of its steps: a step running
    /// now is abandoned (its future dropped; whatever it had done outside stays done, and nothing
    /// of it is committed). The instance ends cancelled, at its last committed step (a revival
    /// resumes there), and its history says it was terminated, why, and which step was
    /// abandoned. Resolves once that is committed, wherever the instance runs. A step blocked in
    /// synchronous code (not at an `.await`) holds its worker thread until it returns; it is
    /// abandoned then. The abandoned attempt is not counted in the version's metrics.
    pub async fn terminate(&self, id: InstanceId, reason: &str) -> Result<(), EngineError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(EngineError::TerminateWithoutReason { id });
        }
        self.runtime
            .end(id, EndRequest::Terminate { reason: reason.into() })
            .await
    }

    /// Waits for an instance to finish and returns how it ended.
    pub async fn outcome(&self, id: InstanceId) -> Result<Outcome, EngineError> {
        self.runtime.outcome(id).await
    }

    /// Waits for an instance to complete and decodes its output.
    pub async fn output<O: DeserializeOwned>(&self, id: InstanceId) -> Result<O, EngineError> {
        self.outcome(id).await?.output()
    }

    /// One instance: version, status, cursor, state.
    pub fn instance(&self, id: InstanceId) -> Result<InstanceInfo, EngineError> {
        self.runtime.instance(id)
    }

    /// A page of what happened to an instance, live or finished, wherever it ran: its start,
    /// every step attempt (what woke it, how long it took, how it ended), cancels, migrations
    /// and moves, each written in the commit of the change it records. Page on with the
    /// answer's `next`.
    pub fn history(
        &self,
        id: InstanceId,
        request: &crate::instance::HistoryRequest,
    ) -> Result<crate::instance::InstanceHistory, EngineError> {
        self.runtime.history(id, request)
    }

    /// The signals delivered to a live instance that it has not consumed yet, in the order it
    /// will (wherever it runs, with PostgreSQL); none for a finished one.
    pub fn pending_signals(&self, id: InstanceId) -> Result<Vec<crate::store::SignalRecord>, EngineError> {
        self.runtime.pending_signals(id)
    }

    /// Instances matching `filter` (live ones from memory, finished ones from the store). A filter
    /// naming a workflow or version no one knows is refused (`UnknownWorkflow`, `UnknownVersion`).
    pub fn list(&self, filter: &InstanceFilter) -> Result<Vec<InstanceInfo>, EngineError> {
        self.runtime.list(filter, usize::MAX)
    }

    /// Like [`Engine::list`], at most `limit` instances.
    pub fn list_limited(&self, filter: &InstanceFilter, limit: usize) -> Result<Vec<InstanceInfo>, EngineError> {
        self.runtime.list(filter, limit)
    }

    /// Every known version with status, counts, oldest live instance and whether its code may go.
    pub fn versions(&self) -> Vec<VersionInfo> {
        self.runtime.versions()
    }

    /// This process's worker id: unique among the processes sharing a PostgreSQL store, `local`
    /// with the embedded store.
    pub fn worker_id(&self) -> String {
        self.runtime.worker_id()
    }

    /// The workers sharing this engine's store, with their versions and whether their lease is
    /// current; just this process with a store only it opens.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>, EngineError> {
        self.runtime.workers()
    }

    /// One version's residency figures.
    pub fn version(&self, workflow: &str, version: &str) -> Result<VersionInfo, EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        self.versions().into_iter().find(|info| info.key == key).ok_or_else(|| {
            crate::registry::RegistryError::UnknownVersion {
                known: self.runtime.registry.describe_workflow(workflow),
                key,
            }
            .into()
        })
    }

    /// Stops new instances reaching a version; it becomes `Drained` when its last instance ends
    /// (at once if it has none). Returns its status afterwards.
    pub async fn drain(&self, workflow: &str, version: &str) -> Result<VersionStatus, EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        self.to_completion("drain", move |engine| async move { engine.runtime.drain(&key).await })
            .await
    }

    /// Undoes a drain: a `Draining` or `Drained` version takes new instances again, routed to as
    /// before. Refused for a retired version and one whose code no live worker has registered.
    /// Returns its status afterwards (`Active`).
    pub async fn activate(&self, workflow: &str, version: &str) -> Result<VersionStatus, EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        self.to_completion(
            "activate",
            move |engine| async move { engine.runtime.activate(&key).await },
        )
        .await
    }

    /// Retires a version with no live instance; fails naming the count otherwise.
    pub async fn retire(&self, workflow: &str, version: &str) -> Result<(), EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        self.to_completion("retire", move |engine| async move { engine.runtime.retire(&key).await })
            .await
    }

    /// Registers state migrations while the engine runs (a new version may bring a new schema).
    /// Refused as a whole if the chain would skip a schema, have a hole or two paths for a step.
    pub fn register_migrations(&self, migrations: Vec<StateMigration>) -> Result<(), EngineError> {
        self.runtime.register_migrations(migrations)
    }

    /// Registers a step mapping between two versions while the engine runs.
    pub fn register_step_mapping(&self, mapping: StepMapping) {
        self.runtime.register_step_mapping(mapping);
    }

    /// A dry run of a move: for every live instance the request selects, whether it can move to
    /// the target version now, and why not (no counterpart step, no migration path, mid-step, ...).
    /// Instances kept in the store only are read from it, not loaded: over many of them this
    /// blocks for a while, so async code calls it through `tokio::task::spawn_blocking`.
    pub fn plan_moves(&self, request: &MoveRequest) -> Result<MovePlan, EngineError> {
        self.runtime.plan_moves(request)
    }

    /// Moves the instances a request selects to its target version, in batches of one commit
    /// each, every instance at a step boundary: version, cursor (mapped by name or mapping) and
    /// migrated state together, with both versions' live counters. Instances that cannot move
    /// when their turn comes are reported with the reason and left as they were.
    pub async fn move_instances(&self, request: &MoveRequest) -> Result<MoveReport, EngineError> {
        let request = request.clone();
        self.to_completion("move_instances", move |engine| async move {
            engine.runtime.apply_moves(&request).await
        })
        .await
    }

    /// A dry run of a revival: for every failed or cancelled instance the request selects, the
    /// version and step it would be taken up at, or why it cannot be (it did not end so, no
    /// counterpart step, no migration path, the target is retired, ...). Nothing is written.
    pub fn plan_revive(&self, request: &ReviveRequest) -> Result<RevivePlan, EngineError> {
        self.runtime.plan_revive(request)
    }

    /// Revives the failed and cancelled instances a request selects, in batches of one commit
    /// each: live again on the target (their own version, or one that fixes what failed them),
    /// at the step they ended on or a mapped one, their state migrated along the chain, with the
    /// revival in their history. The target's `revived` and `live` counters count them (the
    /// counters of the version they ended on keep their ending); a drained target is `Draining`
    /// again ([`Event::VersionUndrained`]). Instances that cannot be revived when their turn
    /// comes are reported with the reason and left as they were.
    pub async fn revive(&self, request: &ReviveRequest) -> Result<ReviveReport, EngineError> {
        let request = request.clone();
        self.to_completion("revive", move |engine| async move {
            engine.runtime.apply_revive(&request).await
        })
        .await
    }

    /// Starts a background migration of a workflow's live instances to the state schema (and
    /// record format) their versions expect, or returns the one already running. It survives
    /// restarts: an unfinished job resumes at the next open where its last batch ended. The job
    /// is the cluster's (with PostgreSQL, of many processes): every worker joins it at its next
    /// heartbeat and migrates the instances it holds (and those it claims while the job runs); a
    /// pause or resume through any worker holds everywhere, the progress is summed over every
    /// worker, and the job finishes, announced once, when every live worker's share has.
    pub fn migrate_states(&self, job: MigrationJob) -> Result<MigrationHandle, EngineError> {
        self.runtime.start_migration(job)
    }

    /// The handle of `workflow`'s background migration started or resumed since open, if any.
    pub fn migration(&self, workflow: &str) -> Option<MigrationHandle> {
        self.runtime.migration(workflow)
    }

    /// Starts a watched rollout of `spec.candidate` over `spec.stable`: from now on the candidate
    /// gets the first stage's share of new instances, and the rollout advances, promotes or rolls
    /// back by itself (see [`RolloutSpec`]). Both versions must be registered and the workflow
    /// must have no other active rollout, and at least one gate must be set unless
    /// [`RolloutSpec::unwatched`]. Returns the rollout's name: the spec's, or `workflow@candidate~N`
    /// when an earlier, finished rollout of the same candidate holds the default name.
    pub async fn start_rollout(&self, spec: RolloutSpec) -> Result<String, EngineError> {
        self.to_completion("start_rollout", move |engine| async move {
            engine.runtime.start_rollout(spec).await
        })
        .await
    }

    /// Applies an operator's operation to a rollout, to its end.
    async fn operate_rollout(&self, name: &str, operation: RolloutOperation) -> Result<(), EngineError> {
        let name = name.to_string();
        self.to_completion("operate_rollout", move |engine| async move {
            engine.runtime.operate_rollout(&name, operation).await
        })
        .await
    }

    /// Holds a rollout at its stage: routing stays, nothing is decided, the hold clock stops.
    pub async fn pause_rollout(&self, name: &str) -> Result<(), EngineError> {
        self.operate_rollout(name, RolloutOperation::Pause).await
    }

    /// Lets a paused rollout go on.
    pub async fn resume_rollout(&self, name: &str) -> Result<(), EngineError> {
        self.operate_rollout(name, RolloutOperation::Resume).await
    }

    /// Rolls a rollout back now: new instances go to the stable version from the next routing
    /// decision on; the rollout is recorded as rolled back by an operator, with both figures.
    pub async fn rollback_rollout(&self, name: &str) -> Result<(), EngineError> {
        self.operate_rollout(name, RolloutOperation::RollBack).await
    }

    /// A rollout by name, with its status, stage and history.
    pub fn rollout(&self, name: &str) -> Option<RolloutRecord> {
        self.runtime
            .rollouts()
            .into_iter()
            .find(|record| record.spec.name == name)
    }

    /// Every rollout, with their histories.
    pub fn rollouts(&self) -> Vec<RolloutRecord> {
        self.runtime.rollouts()
    }

    /// The candidate's and the stable version's figures in a rollout's current stage, as its
    /// gates see them now (counts since the stage began, the metrics window since then).
    pub fn rollout_figures(
        &self,
        record: &RolloutRecord,
    ) -> (strata_core::rollout::Figures, strata_core::rollout::Figures) {
        self.runtime.rollout_figures(record)
    }

    /// The shadow pairs a rollout's shadow stages compared (each real instance of the stable
    /// version against the shadow of the candidate that ran beside it): mismatches first, then
    /// the newest first. Fails for an unknown rollout.
    pub fn shadow_pairs(&self, rollout: &str) -> Result<Vec<strata_core::shadow::ShadowPair>, EngineError> {
        if self.rollout(rollout).is_none() {
            return Err(strata_core::rollout::RolloutError::Unknown {
                name: rollout.to_string(),
            }
            .into());
        }
        let mut pairs = self.runtime.store.shadow_pairs(rollout)?;
        pairs.sort_by(|one, other| {
            (one.matched, std::cmp::Reverse(one.compared_ms), one.real).cmp(&(
                other.matched,
                std::cmp::Reverse(other.compared_ms),
                other.real,
            ))
        });
        Ok(pairs)
    }

    /// Every rollout of `workflow`, oldest first, with their histories.
    pub fn rollout_history(&self, workflow: &str) -> Vec<RolloutRecord> {
        self.runtime
            .rollouts()
            .into_iter()
            .filter(|record| record.spec.workflow == workflow)
            .collect()
    }

    /// Evaluates every running rollout now (the engine also does so as instances finish, every
    /// second, and when a manual clock jumps). With a store many processes share, only the
    /// worker holding the rollout lease evaluates; on the others this does nothing.
    pub async fn evaluate_rollouts(&self) -> Result<(), EngineError> {
        self.to_completion("evaluate_rollouts", |engine| async move {
            engine.runtime.evaluate_rollouts().await
        })
        .await
    }

    /// A version's figures over the last `window` of the engine's clock (rounded up to whole
    /// buckets of `observe::BUCKET_MS`, at most the ring's length).
    pub fn metrics(&self, workflow: &str, version: &str, window: Duration) -> Result<MetricsSnapshot, EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        let metrics =
            self.runtime
                .registry
                .metrics(&key)
                .ok_or_else(|| crate::registry::RegistryError::UnknownVersion {
                    known: self.runtime.registry.describe_workflow(workflow),
                    key,
                })?;
        Ok(metrics.window(self.runtime.clock().now_ms(), window))
    }

    /// A version's metrics window (the last 320 s) as one point per 10 s bucket, oldest first:
    /// finished instances, error rate, step attempts and their p95 latency. With PostgreSQL,
    /// merged over every live worker's published window.
    pub fn metrics_series(
        &self,
        workflow: &str,
        version: &str,
    ) -> Result<Vec<crate::observe::MetricsPoint>, EngineError> {
        let key = VersionKey::new(workflow, parse_version(workflow, version)?);
        if self.runtime.registry.metrics(&key).is_none() {
            return Err(crate::registry::RegistryError::UnknownVersion {
                known: self.runtime.registry.describe_workflow(workflow),
                key,
            }
            .into());
        }
        Ok(self.runtime.metrics_series(&key, self.runtime.clock().now_ms()))
    }

    /// Removes now the finished instances that finished longer than the retention period ago
    /// (the engine also does so in the background); returns how many it removed.
    pub async fn remove_expired_instances(&self) -> Result<u64, EngineError> {
        self.runtime.remove_expired().await
    }

    /// Every metric in Prometheus text format (exposition format 0.0.4), for a scrape endpoint.
    pub fn metrics_text(&self) -> String {
        let now = self.runtime.clock().now_ms();
        let versions: Vec<(VersionInfo, MetricsSnapshot)> = self
            .runtime
            .versions()
            .into_iter()
            .map(|info| {
                let totals = self
                    .runtime
                    .registry
                    .metrics(&info.key)
                    .map(|metrics| metrics.totals(now))
                    .unwrap_or_default();
                (info, totals)
            })
            .collect();
        crate::prometheus::render(&crate::prometheus::Exposition {
            versions: &versions,
            routing: &self.runtime.routing_counts(),
            rollouts: &self.runtime.rollouts(),
        })
    }

    /// Subscribes to the event stream from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.runtime.events.subscribe()
    }

    /// How many subscribers the event stream has now (those of `subscribe`, and each open
    /// `GET /v1/events` of the admin API): whether anyone is listening.
    pub fn event_subscribers(&self) -> usize {
        self.runtime.events.subscribers()
    }

    /// Live records that could not be decoded and were set aside, with the reason.
    pub fn quarantined_records(&self) -> Result<Vec<CorruptRecord>, EngineError> {
        Ok(self.runtime.store.quarantined()?)
    }

    /// How many live instances this engine keeps in memory: those running, ready, or due within
    /// the residency horizon (see [`EngineBuilder::residency_horizon`]); idle ones beyond it
    /// wait in the store.
    pub fn live_instances(&self) -> usize {
        self.runtime.live_count()
    }

    /// What the store has done (applies, syncs).
    pub fn store_stats(&self) -> StoreStats {
        self.runtime.store.stats()
    }

    /// Graceful shutdown: no new work, running steps finish and commit, the store is synced.
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
    }
}

/// Parses a version string for an operator call, naming the workflow in the error.
fn parse_version(workflow: &str, version: &str) -> Result<semver::Version, EngineError> {
    semver::Version::parse(version).map_err(|error| EngineError::InvalidVersion {
        workflow: workflow.to_string(),
        expected: "version (like 2.0.0)",
        version: version.to_string(),
        reason: error.to_string(),
    })
}
