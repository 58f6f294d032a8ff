//! Order fulfilment: validate, reserve stock, take payment (a signal, with a timeout), wait for
//! the warehouse (a durable sleep), ship.
//!
//! - 1.0.0: validate → reserve → wait for `payment` → charge → sleep → ship.
//! - 1.1.0: additive — optional gift wrapping (a new input field with a default) and a
//!   `notify_customer` step after shipping.
//! - 2.0.0: changed sequence — payment is authorised before stock is reserved, and a fraud
//!   check with its own retry policy and attempt timeout runs in between.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata::{Next, RetryPolicy, StepCtx, StepError, StepResult, WorkflowVersion};

/// The workflow's name.
pub const WORKFLOW: &str = "order";

/// One order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The stock-keeping unit; a SKU starting with `flaky-` makes the first reservation attempt fail.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_price_cents: u64,
}

/// What starting an order takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInput {
    /// The order's id.
    pub order_id: String,
    /// The customer's id.
    pub customer: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// How long the warehouse takes before shipping.
    pub warehouse_delay_ms: u64,
    /// How long to wait for payment.
    pub payment_timeout_ms: u64,
    /// Gift wrapping (read from 1.1.0 on; older inputs lack it).
    #[serde(default)]
    pub gift_wrap: bool,
}

impl OrderInput {
    /// An order of `lines` for `customer` with short delays, for examples and tests.
    pub fn new(order_id: impl Into<String>, customer: impl Into<String>, lines: Vec<Line>) -> Self {
        OrderInput {
            order_id: order_id.into(),
            customer: customer.into(),
            lines,
            warehouse_delay_ms: 50,
            payment_timeout_ms: 60_000,
            gift_wrap: false,
        }
    }

    /// The order's total in cents.
    pub fn total_cents(&self) -> u64 {
        self.lines
            .iter()
            .map(|line| line.unit_price_cents * u64::from(line.quantity))
            .sum()
    }
}

/// The payment signal's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The amount paid, in cents.
    pub amount_cents: u64,
    /// The payment provider's reference.
    pub reference: String,
}

/// The signal carrying a [`Payment`].
pub const PAYMENT_SIGNAL: &str = "payment";

/// The state of an order (state schema 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The input the order started with.
    pub input: OrderInput,
    /// The total, once validated.
    pub total_cents: u64,
    /// Stock is reserved.
    pub reserved: bool,
    /// The payment reference, once paid.
    pub payment_reference: Option<String>,
    /// Whether a fraud check passed (2.0.0).
    #[serde(default)]
    pub fraud_checked: bool,
    /// The tracking number, once shipped.
    pub tracking: Option<String>,
    /// Whether the customer was notified (1.1.0).
    #[serde(default)]
    pub customer_notified: bool,
    /// `step@version` for every committed step, in order.
    pub history: Vec<String>,
}

/// How an order ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutput {
    /// The order's id.
    pub order_id: String,
    /// `shipped`, `payment_timed_out` or `underpaid`.
    pub status: String,
    /// The total in cents.
    pub total_cents: u64,
    /// The tracking number, if shipped.
    pub tracking: Option<String>,
    /// Whether the customer was notified (1.1.0).
    #[serde(default)]
    pub customer_notified: bool,
    /// The version that finished the order.
    pub finished_on: String,
}

fn init(input: OrderInput) -> OrderState {
    OrderState {
        input,
        total_cents: 0,
        reserved: false,
        payment_reference: None,
        fraud_checked: false,
        tracking: None,
        customer_notified: false,
        history: Vec::new(),
    }
}

fn visit(ctx: &StepCtx, state: &mut OrderState) {
    state.history.push(format!("{}@{}", ctx.step(), ctx.version()));
}

fn finish(ctx: &StepCtx, state: &OrderState, status: &str) -> OrderOutput {
    OrderOutput {
        order_id: state.input.order_id.clone(),
        status: status.to_string(),
        total_cents: state.total_cents,
        tracking: state.tracking.clone(),
        customer_notified: state.customer_notified,
        finished_on: ctx.version().to_string(),
    }
}

async fn validate(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    visit(&ctx, state);
    if state.input.lines.is_empty() {
        return Ok(Next::fail("the order has no lines"));
    }
    if state.input.lines.iter().any(|line| line.quantity == 0) {
        return Ok(Next::fail("an order line has quantity 0"));
    }
    state.total_cents = state.input.total_cents();
    let next = if ctx.version().major >= 2 {
        "authorize_payment"
    } else {
        "reserve"
    };
    Ok(Next::goto(next))
}

async fn reserve(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    // A real step would call the inventory service with ctx.idempotency_key().
    if ctx.attempt() == 1 && state.input.lines.iter().any(|line| line.sku.starts_with("flaky-")) {
        return Err(StepError::retryable("inventory service unavailable"));
    }
    visit(&ctx, state);
    state.reserved = true;
    if ctx.version().major >= 2 {
        return Ok(Next::sleep(
            Duration::from_millis(state.input.warehouse_delay_ms),
            "ship",
        ));
    }
    let timeout = Duration::from_millis(state.input.payment_timeout_ms);
    Ok(Next::wait_signal_with_timeout(PAYMENT_SIGNAL, "charge", timeout))
}

/// Takes the payment signal; shared by 1.x (`charge`) and 2.x (`collect_payment`).
fn take_payment(ctx: &StepCtx, state: &mut OrderState) -> Result<Option<&'static str>, StepError> {
    visit(ctx, state);
    if ctx.timed_out() {
        return Ok(Some("payment_timed_out"));
    }
    let payment: Payment = ctx
        .signal()?
        .ok_or_else(|| StepError::permanent("woken without a payment signal"))?;
    if payment.amount_cents < state.total_cents {
        return Ok(Some("underpaid"));
    }
    state.payment_reference = Some(payment.reference);
    Ok(None)
}

async fn charge(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    if let Some(status) = take_payment(&ctx, state)? {
        return Ok(Next::complete(finish(&ctx, state, status)));
    }
    Ok(Next::sleep(
        Duration::from_millis(state.input.warehouse_delay_ms),
        "ship",
    ))
}

async fn ship(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    visit(&ctx, state);
    state.tracking = Some(format!("TRK-{}", state.input.order_id));
    if ctx.version() >= &strata::Version::new(1, 1, 0) && ctx.version().major == 1 {
        return Ok(Next::goto("notify_customer"));
    }
    Ok(Next::complete(finish(&ctx, state, "shipped")))
}

async fn notify_customer(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    visit(&ctx, state);
    state.customer_notified = true;
    Ok(Next::complete(finish(&ctx, state, "shipped")))
}

async fn authorize_payment(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    visit(&ctx, state);
    let timeout = Duration::from_millis(state.input.payment_timeout_ms);
    Ok(Next::wait_signal_with_timeout(
        PAYMENT_SIGNAL,
        "collect_payment",
        timeout,
    ))
}

async fn collect_payment(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    if let Some(status) = take_payment(&ctx, state)? {
        return Ok(Next::complete(finish(&ctx, state, status)));
    }
    Ok(Next::goto("fraud_check"))
}

async fn fraud_check(ctx: StepCtx, state: &mut OrderState) -> StepResult<OrderOutput> {
    visit(&ctx, state);
    state.fraud_checked = true;
    Ok(Next::goto("reserve"))
}

fn reserve_retry() -> RetryPolicy {
    RetryPolicy::exponential(5, Duration::from_millis(20)).with_max_backoff(Duration::from_millis(200))
}

/// Version 1.0.0.
pub fn v1_0() -> WorkflowVersion<OrderInput, OrderState, OrderOutput> {
    WorkflowVersion::new(WORKFLOW, "1.0.0")
        .state_schema(1)
        .init(init)
        .signal_type::<Payment>(PAYMENT_SIGNAL)
        .step("validate", validate)
        .step_with_retry("reserve", reserve, reserve_retry())
        .step("charge", charge)
        .step("ship", ship)
}

/// Version 1.1.0: adds gift wrapping to the input and a `notify_customer` step.
pub fn v1_1() -> WorkflowVersion<OrderInput, OrderState, OrderOutput> {
    WorkflowVersion::new(WORKFLOW, "1.1.0")
        .state_schema(1)
        .init(init)
        .signal_type::<Payment>(PAYMENT_SIGNAL)
        .step("validate", validate)
        .step_with_retry("reserve", reserve, reserve_retry())
        .step("charge", charge)
        .step("ship", ship)
        .step("notify_customer", notify_customer)
}

/// Version 2.0.0: authorises payment first, checks for fraud, then reserves and ships.
pub fn v2_0() -> WorkflowVersion<OrderInput, OrderState, OrderOutput> {
    WorkflowVersion::new(WORKFLOW, "2.0.0")
        .state_schema(1)
        .init(init)
        .signal_type::<Payment>(PAYMENT_SIGNAL)
        .step("validate", validate)
        .step("authorize_payment", authorize_payment)
        .step("collect_payment", collect_payment)
        .step_with_retry(
            "fraud_check",
            fraud_check,
            RetryPolicy::exponential(3, Duration::from_millis(50)).with_attempt_timeout(Duration::from_secs(5)),
        )
        .step_with_retry("reserve", reserve, reserve_retry())
        .step("ship", ship)
}

/// The steps a fully paid order visits on `version`, in order: what its `history` must show.
pub fn expected_history(version: &str) -> Vec<String> {
    let steps: &[&str] = match version {
        "1.0.0" => &["validate", "reserve", "charge", "ship"],
        "1.1.0" => &["validate", "reserve", "charge", "ship", "notify_customer"],
        _ => &[
            "validate",
            "authorize_payment",
            "collect_payment",
            "fraud_check",
            "reserve",
            "ship",
        ],
    };
    steps.iter().map(|step| format!("{step}@{version}")).collect()
}
