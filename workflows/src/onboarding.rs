//! Customer onboarding: welcome a new customer, then remind them every so often until they
//! activate their account (an `activated` signal) or the reminders run out.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_core::workflow::{Next, StepCtx, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "onboarding";

/// The signal sent when the customer activates the account.
pub const ACTIVATED_SIGNAL: &str = "activated";

/// What starting an onboarding takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingInput {
    /// The customer's id.
    pub customer: String,
    /// How long to wait for activation before each reminder.
    pub reminder_after_ms: u64,
    /// How many reminders at most.
    pub max_reminders: u32,
}

/// The state of an onboarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingState {
    /// The input.
    pub input: OnboardingInput,
    /// Reminders sent so far.
    pub reminders_sent: u32,
    /// Messages "sent", in order.
    pub outbox: Vec<String>,
    /// `step@version` for every committed step.
    pub history: Vec<String>,
}

/// How an onboarding ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnboardingOutput {
    /// Whether the customer activated.
    pub activated: bool,
    /// Reminders sent.
    pub reminders_sent: u32,
}

async fn welcome(ctx: StepCtx, state: &mut OnboardingState) -> StepResult<OnboardingOutput> {
    state.history.push(format!("welcome@{}", ctx.version()));
    state
        .outbox
        .push(format!("welcome {} [{}]", state.input.customer, ctx.idempotency_key()));
    let wait = Duration::from_millis(state.input.reminder_after_ms);
    Ok(Next::wait_signal_with_timeout(ACTIVATED_SIGNAL, "follow_up", wait))
}

async fn follow_up(ctx: StepCtx, state: &mut OnboardingState) -> StepResult<OnboardingOutput> {
    state.history.push(format!("follow_up@{}", ctx.version()));
    if !ctx.timed_out() {
        return Ok(Next::complete(OnboardingOutput {
            activated: true,
            reminders_sent: state.reminders_sent,
        }));
    }
    if state.reminders_sent >= state.input.max_reminders {
        return Ok(Next::complete(OnboardingOutput {
            activated: false,
            reminders_sent: state.reminders_sent,
        }));
    }
    state.reminders_sent += 1;
    state
        .outbox
        .push(format!("reminder {} to {}", state.reminders_sent, state.input.customer));
    let wait = Duration::from_millis(state.input.reminder_after_ms);
    Ok(Next::wait_signal_with_timeout(ACTIVATED_SIGNAL, "follow_up", wait))
}

/// Version 1.0.0.
pub fn v1_0() -> WorkflowVersion<OnboardingInput, OnboardingState, OnboardingOutput> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .init(|input| OnboardingState {
            input,
            reminders_sent: 0,
            outbox: Vec::new(),
            history: Vec::new(),
        })
        .step("welcome", welcome)
        .step("follow_up", follow_up)
}
