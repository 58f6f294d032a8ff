//! The typed builder of a workflow version and its type-erased form, [`VersionCode`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use semver::Version;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::step::{Next, StepCtx, StepError, StepResult};
use super::{RetryPolicy, UpgradePolicy};
use crate::measure::{MeasureKind, MeasureSpec};
use crate::shadow::OutputComparator;

/// A mistake in a workflow version's definition, reported when it is registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The workflow name is empty.
    #[error("a workflow needs a non-empty name")]
    EmptyWorkflowName,
    /// The version string is not semver.
    #[error("workflow '{workflow}': version '{version}' is not a semantic version (like 1.2.0): {reason}")]
    InvalidVersion {
        /// The workflow.
        workflow: String,
        /// The text given as version.
        version: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No `init` function was given.
    #[error("{workflow}@{version}: call .init(...) to say how an input becomes the initial state")]
    MissingInit {
        /// The workflow.
        workflow: String,
        /// The version.
        version: Version,
    },
    /// The version has no step.
    #[error("{workflow}@{version}: a version needs at least one step")]
    NoSteps {
        /// The workflow.
        workflow: String,
        /// The version.
        version: Version,
    },
    /// Two steps share one name.
    #[error("{workflow}@{version}: step '{step}' is defined twice; step names must be unique")]
    DuplicateStep {
        /// The workflow.
        workflow: String,
        /// The version.
        version: Version,
        /// The repeated name.
        step: String,
    },
    /// A measure's name is not valid, or it is declared twice.
    #[error("{workflow}@{version}: measure '{measure}': {problem}")]
    BadMeasure {
        /// The workflow.
        workflow: String,
        /// The version.
        version: Version,
        /// The measure's name as given.
        measure: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The entry step named with `.entry(...)` is not defined.
    #[error("{workflow}@{version}: entry step '{step}' is not defined; define it with .step(\"{step}\", ...)")]
    UnknownEntryStep {
        /// The workflow.
        workflow: String,
        /// The version.
        version: Version,
        /// The missing step.
        step: String,
    },
}

/// An async function usable as a step: `async fn name(ctx: StepCtx, state: &mut S) -> StepResult<O>`.
///
/// Implemented for every such `async fn`; the trait exists so the future may borrow the state.
pub trait StepFn<'a, S: 'a, O>: Send + Sync + 'static {
    /// The step's future.
    type Future: Future<Output = StepResult<O>> + Send + 'a;
    /// Runs the step.
    fn call(&self, ctx: StepCtx, state: &'a mut S) -> Self::Future;
}

impl<'a, S: 'a, O, F, Fut> StepFn<'a, S, O> for F
where
    F: Fn(StepCtx, &'a mut S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepResult<O>> + Send + 'a,
{
    type Future = Fut;
    fn call(&self, ctx: StepCtx, state: &'a mut S) -> Fut {
        self(ctx, state)
    }
}

type ErasedStepFn<S, O> = Arc<dyn for<'a> Fn(StepCtx, &'a mut S) -> BoxFuture<'a, StepResult<O>> + Send + Sync>;

fn higher_ranked<S, O, C>(closure: C) -> C
where
    C: for<'a> Fn(StepCtx, &'a mut S) -> BoxFuture<'a, StepResult<O>>,
{
    closure
}

struct StepDefinition<S, O> {
    run: ErasedStepFn<S, O>,
    retry: RetryPolicy,
}

/// One version of a workflow: typed input `I`, state `S` and output `O`, and named async steps.
///
/// ```
/// use strata_core::workflow::{Next, StepCtx, StepResult, WorkflowVersion};
///
/// async fn greet(_ctx: StepCtx, state: &mut String) -> StepResult<String> {
///     Ok(Next::complete(format!("hello {state}")))
/// }
///
/// let version: WorkflowVersion<String, String, String> =
///     WorkflowVersion::new("greeting", "1.0.0").init(|name: String| name).step("greet", greet);
/// ```
pub struct WorkflowVersion<I, S, O> {
    workflow: String,
    version_text: String,
    state_schema: u32,
    init: Option<Arc<dyn Fn(I) -> S + Send + Sync>>,
    entry: Option<String>,
    steps: Vec<(String, StepDefinition<S, O>)>,
    signals: HashMap<String, SignalCheck>,
    upgrade_policy: UpgradePolicy,
    default_retry: RetryPolicy,
    measures: Vec<MeasureSpec>,
    comparator: Option<Arc<OutputComparator>>,
}

/// Whether `name` can name a measure: 1 to 64 ASCII letters, digits, `_`, `-` or `.` — it is
/// a label in Prometheus, a key in the config file and a word in the CLI's gate syntax.
pub fn valid_measure_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

/// Checks that a signal payload decodes as the declared type.
type SignalCheck = fn(&[u8]) -> Result<(), String>;

fn decodes_as<P: DeserializeOwned>(payload: &[u8]) -> Result<(), String> {
    super::decode_user::<P>(payload).map(|_| ())
}

impl<I, S, O> WorkflowVersion<I, S, O>
where
    I: DeserializeOwned + Send + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    /// Starts the definition of `version` (semver, like "1.2.0") of `workflow`.
    pub fn new(workflow: impl Into<String>, version: impl Into<String>) -> Self {
        WorkflowVersion {
            workflow: workflow.into(),
            version_text: version.into(),
            state_schema: 1,
            init: None,
            entry: None,
            steps: Vec::new(),
            signals: HashMap::new(),
            upgrade_policy: UpgradePolicy::Pinned,
            default_retry: RetryPolicy::default(),
            measures: Vec::new(),
            comparator: None,
        }
    }

    /// The schema number of the state this version reads and writes (default 1).
    pub fn state_schema(mut self, schema: u32) -> Self {
        self.state_schema = schema;
        self
    }

    /// How an input becomes the initial state.
    pub fn init(mut self, init: impl Fn(I) -> S + Send + Sync + 'static) -> Self {
        self.init = Some(Arc::new(init));
        self
    }

    /// Names the entry step; without it the first step defined is the entry.
    pub fn entry(mut self, step: impl Into<String>) -> Self {
        self.entry = Some(step.into());
        self
    }

    /// The retry policy of steps defined with [`WorkflowVersion::step`] after this call.
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_retry = policy;
        self
    }

    /// Adds a step with the default retry policy.
    pub fn step<F>(self, name: impl Into<String>, step: F) -> Self
    where
        F: for<'a> StepFn<'a, S, O>,
    {
        let retry = self.default_retry.clone();
        self.step_with_retry(name, step, retry)
    }

    /// Adds a step with its own retry policy.
    pub fn step_with_retry<F>(mut self, name: impl Into<String>, step: F, retry: RetryPolicy) -> Self
    where
        F: for<'a> StepFn<'a, S, O>,
    {
        let run: ErasedStepFn<S, O> = Arc::new(higher_ranked(
            move |ctx: StepCtx, state: &mut S| -> BoxFuture<'_, StepResult<O>> { Box::pin(step.call(ctx, state)) },
        ));
        self.steps.push((name.into(), StepDefinition { run, retry }));
        self
    }

    /// Declares the payload type of signal `name`: `Engine::signal` then refuses a payload that
    /// does not decode as `P`, before storing it, so a malformed signal never reaches a step.
    pub fn signal_type<P: DeserializeOwned>(mut self, name: impl Into<String>) -> Self {
        self.signals.insert(name.into(), decodes_as::<P>);
        self
    }

    /// Declares the measure `name`, which steps record with
    /// [`StepCtx::record`](super::StepCtx::record), and how it aggregates: summed per instance,
    /// like a cost (`MeasureKind::Summed`), or averaged, like a score (`MeasureKind::Averaged`).
    /// Rollout gates may watch a declared measure.
    pub fn measure(mut self, name: impl Into<String>, kind: MeasureKind) -> Self {
        self.measures.push(MeasureSpec {
            name: name.into(),
            kind,
        });
        self
    }

    /// The upgrade policy of this version's instances (default [`UpgradePolicy::Pinned`]).
    pub fn upgrade_policy(mut self, policy: UpgradePolicy) -> Self {
        self.upgrade_policy = policy;
        self
    }

    /// Checks the definition and erases its types for the runtime.
    pub fn into_code(self) -> Result<Arc<dyn VersionCode>, DefinitionError> {
        if self.workflow.trim().is_empty() {
            return Err(DefinitionError::EmptyWorkflowName);
        }
        let version = Version::parse(&self.version_text).map_err(|error| DefinitionError::InvalidVersion {
            workflow: self.workflow.clone(),
            version: self.version_text.clone(),
            reason: error.to_string(),
        })?;
        let Some(init) = self.init else {
            return Err(DefinitionError::MissingInit {
                workflow: self.workflow,
                version,
            });
        };
        let Some(first) = self.steps.first().map(|(name, _)| name.clone()) else {
            return Err(DefinitionError::NoSteps {
                workflow: self.workflow,
                version,
            });
        };
        let entry = self.entry.unwrap_or(first);
        let mut steps = HashMap::with_capacity(self.steps.len());
        for (name, definition) in self.steps {
            if steps.contains_key(&name) {
                return Err(DefinitionError::DuplicateStep {
                    workflow: self.workflow,
                    version,
                    step: name,
                });
            }
            steps.insert(name, definition);
        }
        if !steps.contains_key(&entry) {
            return Err(DefinitionError::UnknownEntryStep {
                workflow: self.workflow,
                version,
                step: entry,
            });
        }
        for (index, spec) in self.measures.iter().enumerate() {
            let problem = if !valid_measure_name(&spec.name) {
                Some("a measure's name is 1 to 64 letters, digits, '_', '-' or '.'")
            } else if self.measures[..index].iter().any(|earlier| earlier.name == spec.name) {
                Some("it is declared twice")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(DefinitionError::BadMeasure {
                    workflow: self.workflow,
                    version,
                    measure: spec.name.clone(),
                    problem,
                });
            }
        }
        Ok(Arc::new(TypedVersion {
            workflow: Arc::from(self.workflow.as_str()),
            version: Arc::new(version),
            state_schema: self.state_schema,
            init,
            entry,
            steps,
            signals: self.signals,
            upgrade_policy: self.upgrade_policy,
            fallback_retry: RetryPolicy::no_retry(),
            measures: Arc::from(self.measures),
            comparator: self.comparator,
        }))
    }
}

impl<I, S, O> WorkflowVersion<I, S, O>
where
    I: DeserializeOwned + Send + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + DeserializeOwned + Send + 'static,
{
    /// How a shadow run of this version, as a rollout's candidate, is compared with the stable
    /// version's real run of the same input: `compare(stable, candidate)` gets both outputs
    /// read as this version's output type and says `Ok(())` when they agree, else what differs
    /// (shown with the pair). Without it the stored outputs must be equal, and a mismatch names
    /// the fields that differ. A stable output that does not read as this type is a mismatch.
    pub fn compare_outputs(mut self, compare: impl Fn(&O, &O) -> Result<(), String> + Send + Sync + 'static) -> Self {
        let erased = move |stable: &[u8], candidate: &[u8]| -> Result<(), String> {
            let stable: O = super::decode_user(stable)
                .map_err(|error| format!("the stable's output does not read as this version's: {error}"))?;
            let candidate: O = super::decode_user(candidate)
                .map_err(|error| format!("the candidate's output does not read back: {error}"))?;
            super::catch_user_panic(|| compare(&stable, &candidate))
                .map_err(|message| format!("the comparator panicked: {message}"))?
        };
        self.comparator = Some(Arc::new(erased));
        self
    }
}

/// The result of a step attempt that returned normally, with state and output encoded.
pub struct StepOutcome {
    /// The new state, encoded.
    pub state: Vec<u8>,
    /// What comes next, its output encoded.
    pub next: Next<Vec<u8>>,
}

/// Why a step attempt produced no outcome.
#[derive(Debug, Clone)]
pub enum StepFailure {
    /// The cursor names a step this version does not define.
    UnknownStep,
    /// The stored state does not decode as this version's state type.
    StateUndecodable(String),
    /// The new state or the output does not encode.
    Unencodable(String),
    /// The step returned an error.
    Step(StepError),
}

/// Why a start's initial state could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitFailure {
    /// The input does not decode as the version's input type.
    #[error("its input does not decode as the version's input: {0}")]
    Input(String),
    /// The version's `init` panicked, with this message.
    #[error("its init function panicked: {0}")]
    Panicked(String),
    /// The state `init` built does not encode.
    #[error("the state its init function built does not encode: {0}")]
    State(String),
}

/// A workflow version with its types erased: what the registry holds and the runtime runs.
pub trait VersionCode: Send + Sync + 'static {
    /// The workflow's name.
    fn workflow(&self) -> &Arc<str>;
    /// The version.
    fn version(&self) -> &Arc<Version>;
    /// The schema number of the state this version reads and writes.
    fn state_schema(&self) -> u32;
    /// The step a new instance starts at.
    fn entry_step(&self) -> &str;
    /// Whether the version defines `step`.
    fn has_step(&self, step: &str) -> bool;
    /// The retry policy of `step` (the version's fallback for an unknown one).
    fn retry_policy(&self, step: &str) -> &RetryPolicy;
    /// What happens to its instances when a newer version becomes the routing target.
    fn upgrade_policy(&self) -> UpgradePolicy;
    /// Checks a signal payload against the declared type of signal `name`, if one is declared.
    fn check_signal(&self, name: &str, payload: &[u8]) -> Result<(), String>;
    /// Decodes an input and builds the encoded initial state.
    fn initial_state(&self, input: &[u8]) -> Result<Vec<u8>, InitFailure>;
    /// Runs the step named in `ctx` on the encoded state.
    fn run_step<'a>(&'a self, ctx: StepCtx, state: &'a [u8]) -> BoxFuture<'a, Result<StepOutcome, StepFailure>>;
    /// The measures the version declares, in the order declared.
    fn measures(&self) -> &Arc<[MeasureSpec]>;
    /// How a shadow run of this version (a rollout's candidate) is compared with the stable
    /// version's real run, by their stored outputs; `None`: they must be equal.
    fn output_comparator(&self) -> Option<&OutputComparator>;
}

struct TypedVersion<I, S, O> {
    workflow: Arc<str>,
    version: Arc<Version>,
    state_schema: u32,
    init: Arc<dyn Fn(I) -> S + Send + Sync>,
    entry: String,
    steps: HashMap<String, StepDefinition<S, O>>,
    signals: HashMap<String, SignalCheck>,
    upgrade_policy: UpgradePolicy,
    fallback_retry: RetryPolicy,
    measures: Arc<[MeasureSpec]>,
    comparator: Option<Arc<OutputComparator>>,
}

impl<I, S, O> VersionCode for TypedVersion<I, S, O>
where
    I: DeserializeOwned + Send + 'static,
    S: Serialize + DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    fn workflow(&self) -> &Arc<str> {
        &self.workflow
    }

    fn version(&self) -> &Arc<Version> {
        &self.version
    }

    fn state_schema(&self) -> u32 {
        self.state_schema
    }

    fn entry_step(&self) -> &str {
        &self.entry
    }

    fn has_step(&self, step: &str) -> bool {
        self.steps.contains_key(step)
    }

    fn retry_policy(&self, step: &str) -> &RetryPolicy {
        self.steps
            .get(step)
            .map_or(&self.fallback_retry, |definition| &definition.retry)
    }

    fn upgrade_policy(&self) -> UpgradePolicy {
        self.upgrade_policy
    }

    fn measures(&self) -> &Arc<[MeasureSpec]> {
        &self.measures
    }

    fn output_comparator(&self) -> Option<&OutputComparator> {
        self.comparator.as_deref()
    }

    fn check_signal(&self, name: &str, payload: &[u8]) -> Result<(), String> {
        self.signals.get(name).map_or(Ok(()), |check| check(payload))
    }

    fn initial_state(&self, input: &[u8]) -> Result<Vec<u8>, InitFailure> {
        let input: I = super::decode_user(input).map_err(InitFailure::Input)?;
        let state = super::catch_user_panic(|| (self.init)(input)).map_err(InitFailure::Panicked)?;
        super::encode_user(&state).map_err(InitFailure::State)
    }

    fn run_step<'a>(&'a self, ctx: StepCtx, state: &'a [u8]) -> BoxFuture<'a, Result<StepOutcome, StepFailure>> {
        Box::pin(async move {
            let step = self.steps.get(ctx.step()).ok_or(StepFailure::UnknownStep)?;
            let mut typed: S = crate::instance::decode_stored(state)
                .map_err(|error| StepFailure::StateUndecodable(error.to_string()))?;
            let next = (step.run)(ctx, &mut typed).await.map_err(StepFailure::Step)?;
            let mut encoded = Vec::with_capacity(state.len() + 32);
            rmp_serde::encode::write_named(&mut encoded, &typed)
                .map_err(|error| StepFailure::Unencodable(format!("state: {error}")))?;
            let state = encoded;
            let next = match next {
                Next::Complete(output) => Next::Complete(
                    rmp_serde::to_vec_named(&output)
                        .map_err(|error| StepFailure::Unencodable(format!("output: {error}")))?,
                ),
                other => other.map_output(|_| Vec::new()),
            };
            Ok(StepOutcome { state, next })
        })
    }
}
