//! The contract between the runtime and one step: what a step is given and what it returns.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use semver::Version;
use serde::de::DeserializeOwned;

use crate::instance::InstanceId;
use crate::measure::MeasureRecorder;

/// Why a step runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeReason {
    /// The entry step of a new instance.
    Started,
    /// The previous step returned [`Next::Goto`].
    Continued,
    /// The durable sleep of [`Next::Sleep`] ended.
    TimerFired,
    /// The signal awaited by [`Next::WaitSignal`] arrived.
    Signal {
        /// The signal's name.
        name: String,
        /// The signal's payload (MessagePack); decode it with [`StepCtx::signal`].
        payload: Vec<u8>,
    },
    /// The signal awaited by [`Next::WaitSignal`] did not arrive before its timeout.
    SignalTimedOut {
        /// The name of the signal that did not arrive.
        name: String,
    },
}

/// What a step gets besides the state: who it is, which attempt, why it runs.
#[derive(Debug, Clone)]
pub struct StepCtx {
    instance: InstanceId,
    workflow: Arc<str>,
    version: Arc<Version>,
    step: Arc<str>,
    attempt: u32,
    visit: u64,
    wake: WakeReason,
    now: SystemTime,
    recorder: Option<Arc<MeasureRecorder>>,
    shadow: bool,
}

impl StepCtx {
    /// The context of the first attempt of the first visit of `step` of a new instance, at the
    /// Unix epoch: what the runtime builds for each attempt (with the `with_` methods), and what a
    /// unit test of a step's function builds to call it.
    pub fn new(instance: InstanceId, workflow: Arc<str>, version: Arc<Version>, step: Arc<str>) -> StepCtx {
        StepCtx {
            instance,
            workflow,
            version,
            step,
            attempt: 1,
            visit: 0,
            wake: WakeReason::Started,
            now: SystemTime::UNIX_EPOCH,
            recorder: None,
            shadow: false,
        }
    }

    /// The same context, for a step of a shadow instance (see [`StepCtx::is_shadow`]).
    pub fn as_shadow(mut self) -> StepCtx {
        self.shadow = true;
        self
    }

    /// Whether this step belongs to a **shadow instance**: a run of a rollout's candidate beside
    /// a real instance of the stable version, with the same input, in the rollout's shadow stage.
    /// Its outcome reaches no caller and does not count as the version's; it is compared with
    /// the real one's. A shadow step must not act on the world as the real one does — skip
    /// side effects (send no email, charge no card), or point them at a sandbox — and should
    /// compute and record (measures) as the real one would.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// The same context, its measures recorded into `recorder` (the runtime gives one to each
    /// attempt of a version that declares measures; a unit test of a step may give its own and
    /// read what the step recorded with [`MeasureRecorder::take`]).
    pub fn with_recorder(mut self, recorder: Arc<MeasureRecorder>) -> StepCtx {
        self.recorder = Some(recorder);
        self
    }

    /// The same context for attempt `attempt` (from 1) of visit `visit` of the step.
    pub fn with_attempt(mut self, attempt: u32, visit: u64) -> StepCtx {
        self.attempt = attempt;
        self.visit = visit;
        self
    }

    /// The same context, woken for `wake`.
    pub fn with_wake(mut self, wake: WakeReason) -> StepCtx {
        self.wake = wake;
        self
    }

    /// The same context, its attempt beginning at `now`.
    pub fn at(mut self, now: SystemTime) -> StepCtx {
        self.now = now;
        self
    }

    /// The instance this step belongs to.
    pub fn instance_id(&self) -> InstanceId {
        self.instance
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The version the instance is pinned to; the step's code is this version's.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The name of the running step.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The attempt number of this step visit, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same for every attempt of this step visit and different for every other
    /// visit; pass it to external services to deduplicate the step's side effects. A shadow
    /// instance's starts with `shadow-`, so a service can tell (and refuse) its calls.
    pub fn idempotency_key(&self) -> String {
        let shadow = if self.shadow { "shadow-" } else { "" };
        format!("{shadow}{}-{}-{}", self.instance, self.visit, self.step)
    }

    /// Why the step runs now.
    pub fn wake_reason(&self) -> &WakeReason {
        &self.wake
    }

    /// The payload of the signal that woke this step, decoded; `Ok(None)` if no signal woke it.
    pub fn signal<T: DeserializeOwned>(&self) -> Result<Option<T>, StepError> {
        match &self.wake {
            WakeReason::Signal { name, payload } => crate::instance::decode_stored(payload)
                .map(Some)
                .map_err(|error| StepError::permanent(format!("signal '{name}' payload does not decode: {error}"))),
            _ => Ok(None),
        }
    }

    /// Whether this step runs because an awaited signal timed out.
    pub fn timed_out(&self) -> bool {
        matches!(self.wake, WakeReason::SignalTimedOut { .. })
    }

    /// The wall-clock time at which this attempt began.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// Records `value` of the measure `measure` (declared on the version with
    /// `WorkflowVersion::measure`): what this attempt's work cost, or how good it was —
    /// `ctx.record("tokens", 1_250.0)`, `ctx.record("quality", 0.92)`. Recorded more than once in
    /// an attempt, a summed measure adds up and an averaged one counts each value.
    ///
    /// The values are committed with the step, only if this attempt's result is kept (it
    /// succeeded, or failed for good): a retried attempt's values are dropped, so a step's
    /// measures count once however often it ran, crashes included. They are added to the
    /// version's totals when the instance finishes. A measure the version does not declare, or a
    /// value that is not finite, is dropped with a warning.
    pub fn record(&self, measure: &str, value: f64) {
        match &self.recorder {
            Some(recorder) => recorder.record(measure, value),
            None => tracing::warn!(
                measure,
                version = %self.version,
                workflow = %self.workflow,
                "a step recorded a measure, but its version declares none; declare it with .measure(name, kind) — the value is dropped"
            ),
        }
    }
}

/// What a step says comes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next<O> {
    /// Run the named step next, right after this step's commit.
    Goto(String),
    /// Sleep durably (the timer survives restarts), then run `then`.
    Sleep {
        /// How long to sleep.
        duration: Duration,
        /// The step to run afterwards.
        then: String,
    },
    /// Wait for the named signal, then run `then` with its payload; with a timeout, `then` runs
    /// after it with [`StepCtx::timed_out`] true.
    WaitSignal {
        /// The signal's name.
        name: String,
        /// The step to run when it arrives or times out.
        then: String,
        /// How long to wait at most.
        timeout: Option<Duration>,
    },
    /// The instance completed with this output.
    Complete(O),
    /// The instance failed for a business reason; it is not retried.
    Fail(String),
}

impl<O> Next<O> {
    /// Run `step` next.
    pub fn goto(step: impl Into<String>) -> Self {
        Next::Goto(step.into())
    }

    /// Sleep durably for `duration`, then run `then`.
    pub fn sleep(duration: Duration, then: impl Into<String>) -> Self {
        Next::Sleep {
            duration,
            then: then.into(),
        }
    }

    /// Wait for signal `name` without a timeout, then run `then`.
    pub fn wait_signal(name: impl Into<String>, then: impl Into<String>) -> Self {
        Next::WaitSignal {
            name: name.into(),
            then: then.into(),
            timeout: None,
        }
    }

    /// Wait for signal `name` at most `timeout`, then run `then`.
    pub fn wait_signal_with_timeout(name: impl Into<String>, then: impl Into<String>, timeout: Duration) -> Self {
        Next::WaitSignal {
            name: name.into(),
            then: then.into(),
            timeout: Some(timeout),
        }
    }

    /// Complete with `output`.
    pub fn complete(output: O) -> Self {
        Next::Complete(output)
    }

    /// Fail with `reason`.
    pub fn fail(reason: impl Into<String>) -> Self {
        Next::Fail(reason.into())
    }

    /// The same transition with its output mapped (the runtime encodes outputs this way).
    pub fn map_output<P>(self, map: impl FnOnce(O) -> P) -> Next<P> {
        match self {
            Next::Goto(step) => Next::Goto(step),
            Next::Sleep { duration, then } => Next::Sleep { duration, then },
            Next::WaitSignal { name, then, timeout } => Next::WaitSignal { name, then, timeout },
            Next::Complete(output) => Next::Complete(map(output)),
            Next::Fail(reason) => Next::Fail(reason),
        }
    }
}

/// The result of one step attempt.
pub type StepResult<O> = Result<Next<O>, StepError>;

/// A failed step attempt. Retryable errors are retried by the step's [`crate::workflow::RetryPolicy`];
/// permanent ones fail the instance at once. Any `std::error::Error` converts into a retryable one,
/// so `?` works inside steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    message: String,
    retryable: bool,
}

impl StepError {
    /// An error worth retrying (a timeout, an unavailable service).
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that no retry can fix; the instance fails.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
        }
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the retry policy may retry it.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::retryable(error.to_string())
    }
}
