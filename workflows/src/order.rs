//! Order fulfilment: validate, reserve stock, take payment (a signal, with a timeout), wait for
//! the warehouse (a durable sleep), ship.
//!
//! - 1.0.0: validate → reserve → wait for `payment` → charge → sleep → ship.
//! - 1.1.0: additive — optional gift wrapping (a new input field with a default) and a
//!   `notify_customer` step after shipping.
//! - 2.0.0: changed sequence — payment is authorised before stock is reserved, and a fraud
//!   check with its own retry policy and attempt timeout runs in between. State schema 2: the
//!   free-text delivery address is split into a structured [`Address`].
//! - 3.0.0: the payment step `collect_payment` is renamed `capture_payment` (see
//!   [`step_mappings`]); state schema 3 adds loyalty points computed from the total.
//!
//! [`migrations`] turns schema 1 into 2 (with an inverse, so 2.0.0 instances can move back to
//! 1.x) and 2 into 3 (without one: the points cannot be un-earned).

use std::time::Duration;

use semver::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strata_core::migrate::{StateMigration, StepMapping};
use strata_core::workflow::{decode_user, Next, RetryPolicy, StepCtx, StepError, StepResult, WorkflowVersion};

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
    /// The delivery address as the customer typed it: `street, postcode town`.
    #[serde(default)]
    pub address: String,
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
            address: String::new(),
        }
    }

    /// The same order delivered to `address` (`street, postcode town`).
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
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
    /// Where the order was shipped to, once shipped.
    #[serde(default)]
    pub shipped_to: Option<String>,
}

/// A structured delivery address (state schema 2 on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street and number.
    pub street: String,
    /// Postcode.
    pub postcode: String,
    /// Town.
    pub town: String,
}

impl Address {
    /// Parses `street, postcode town`; an empty text is an empty address.
    pub fn parse(text: &str) -> Result<Address, String> {
        if text.trim().is_empty() {
            return Ok(Address::default());
        }
        let (street, rest) = text
            .split_once(',')
            .ok_or_else(|| format!("address '{text}' has no comma between street and town"))?;
        let (postcode, town) = rest
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("address '{text}' has no postcode before the town"))?;
        Ok(Address {
            street: street.trim().to_string(),
            postcode: postcode.to_string(),
            town: town.trim().to_string(),
        })
    }

    /// The address as one line, the way schema 1 stored it.
    pub fn one_line(&self) -> String {
        if self.street.is_empty() && self.town.is_empty() {
            return String::new();
        }
        format!("{}, {} {}", self.street, self.postcode, self.town)
    }
}

/// The state of an order in schema 2 (2.0.0): the address is structured and no longer kept as
/// free text in `order.input.address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStateV2 {
    /// Everything schema 1 held.
    pub order: OrderState,
    /// Where to deliver.
    pub ship_to: Address,
}

/// The state of an order in schema 3 (3.0.0): schema 2 plus loyalty points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStateV3 {
    /// Everything schema 1 held.
    pub order: OrderState,
    /// Where to deliver.
    pub ship_to: Address,
    /// One point per whole currency unit of the total, computed by the migration from schema 2.
    pub loyalty_points: u64,
}

/// What every schema of the order state offers the steps.
pub trait OrderShape: Serialize + DeserializeOwned + Send + 'static {
    /// The fields all schemas share.
    fn order(&mut self) -> &mut OrderState;
    /// The delivery address as one line.
    fn delivery_line(&self) -> String;
}

impl OrderShape for OrderState {
    fn order(&mut self) -> &mut OrderState {
        self
    }
    fn delivery_line(&self) -> String {
        self.input.address.clone()
    }
}

impl OrderShape for OrderStateV2 {
    fn order(&mut self) -> &mut OrderState {
        &mut self.order
    }
    fn delivery_line(&self) -> String {
        self.ship_to.one_line()
    }
}

impl OrderShape for OrderStateV3 {
    fn order(&mut self) -> &mut OrderState {
        &mut self.order
    }
    fn delivery_line(&self) -> String {
        self.ship_to.one_line()
    }
}

/// The fields every schema shares, read from a stored state of any schema (1, 2 or 3):
/// `order_state(info.state_schema(), info.state_bytes())`.
pub fn order_state(schema: u32, state: &[u8]) -> Result<OrderState, String> {
    match schema {
        1 => decode_user::<OrderState>(state),
        2 => decode_user::<OrderStateV2>(state).map(|state| state.order),
        _ => decode_user::<OrderStateV3>(state).map(|state| state.order),
    }
}

/// Splits the free-text address (schema 1 → 2).
pub fn split_address(mut old: OrderState) -> Result<OrderStateV2, String> {
    let ship_to = Address::parse(&old.input.address)?;
    old.input.address.clear();
    Ok(OrderStateV2 { order: old, ship_to })
}

/// Joins the structured address back into free text (schema 2 → 1).
pub fn join_address(mut new: OrderStateV2) -> Result<OrderState, String> {
    new.order.input.address = new.ship_to.one_line();
    Ok(new.order)
}

/// Adds loyalty points, one per 100 cents of the total (schema 2 → 3).
pub fn add_loyalty_points(old: OrderStateV2) -> Result<OrderStateV3, String> {
    let total = if old.order.total_cents > 0 {
        old.order.total_cents
    } else {
        old.order.input.total_cents()
    };
    Ok(OrderStateV3 {
        order: old.order,
        ship_to: old.ship_to,
        loyalty_points: total / 100,
    })
}

/// The order state's migrations: 1 → 2 (with its inverse) and 2 → 3.
pub fn migrations() -> Vec<StateMigration> {
    vec![
        StateMigration::new(WORKFLOW, 1, 2, split_address).with_inverse(join_address),
        StateMigration::new(WORKFLOW, 2, 3, add_loyalty_points),
    ]
}

/// Step renames between versions: 2.0.0's `collect_payment` is 3.0.0's `capture_payment`.
pub fn step_mappings() -> Vec<StepMapping> {
    vec![StepMapping::new(WORKFLOW, Version::new(2, 0, 0), Version::new(3, 0, 0))
        .step("collect_payment", "capture_payment")]
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
        shipped_to: None,
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

fn init_v2(input: OrderInput) -> OrderStateV2 {
    let ship_to = Address::parse(&input.address).unwrap_or_default();
    let mut order = init(input);
    order.input.address.clear();
    OrderStateV2 { order, ship_to }
}

fn init_v3(input: OrderInput) -> OrderStateV3 {
    let OrderStateV2 { order, ship_to } = init_v2(input);
    let loyalty_points = order.input.total_cents() / 100;
    OrderStateV3 {
        order,
        ship_to,
        loyalty_points,
    }
}

async fn validate<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
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

async fn reserve<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
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

async fn charge<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
    if let Some(status) = take_payment(&ctx, state)? {
        return Ok(Next::complete(finish(&ctx, state, status)));
    }
    Ok(Next::sleep(
        Duration::from_millis(state.input.warehouse_delay_ms),
        "ship",
    ))
}

async fn ship<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let line = state.delivery_line();
    let state = state.order();
    visit(&ctx, state);
    state.shipped_to = Some(line);
    state.tracking = Some(format!("TRK-{}", state.input.order_id));
    if ctx.version() >= &Version::new(1, 1, 0) && ctx.version().major == 1 {
        return Ok(Next::goto("notify_customer"));
    }
    Ok(Next::complete(finish(&ctx, state, "shipped")))
}

async fn notify_customer<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
    visit(&ctx, state);
    state.customer_notified = true;
    Ok(Next::complete(finish(&ctx, state, "shipped")))
}

async fn authorize_payment<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
    visit(&ctx, state);
    let timeout = Duration::from_millis(state.input.payment_timeout_ms);
    let then = if ctx.version().major >= 3 {
        "capture_payment"
    } else {
        "collect_payment"
    };
    Ok(Next::wait_signal_with_timeout(PAYMENT_SIGNAL, then, timeout))
}

/// Takes the payment on 2.x (`collect_payment`) and 3.x (`capture_payment`).
async fn collect_payment<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
    if let Some(status) = take_payment(&ctx, state)? {
        return Ok(Next::complete(finish(&ctx, state, status)));
    }
    Ok(Next::goto("fraud_check"))
}

async fn fraud_check<S: OrderShape>(ctx: StepCtx, state: &mut S) -> StepResult<OrderOutput> {
    let state = state.order();
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

/// 1.1.0's steps on state type `S`.
fn steps_1_1<S: OrderShape>(
    version: WorkflowVersion<OrderInput, S, OrderOutput>,
) -> WorkflowVersion<OrderInput, S, OrderOutput> {
    version
        .signal_type::<Payment>(PAYMENT_SIGNAL)
        .step("validate", validate)
        .step_with_retry("reserve", reserve, reserve_retry())
        .step("charge", charge)
        .step("ship", ship)
        .step("notify_customer", notify_customer)
}

/// Version 1.1.0: adds gift wrapping to the input and a `notify_customer` step.
pub fn v1_1() -> WorkflowVersion<OrderInput, OrderState, OrderOutput> {
    steps_1_1(WorkflowVersion::new(WORKFLOW, "1.1.0").state_schema(1).init(init))
}

/// Version 1.1.0's logic built on state schema 2: the deploy after the state type changed. The
/// steps are 1.1.0's; instances stored on schema 1 are migrated when loaded, or in the background.
pub fn v1_1_on_schema_2() -> WorkflowVersion<OrderInput, OrderStateV2, OrderOutput> {
    steps_1_1(WorkflowVersion::new(WORKFLOW, "1.1.0").state_schema(2).init(init_v2))
}

fn fraud_retry() -> RetryPolicy {
    RetryPolicy::exponential(3, Duration::from_millis(50)).with_attempt_timeout(Duration::from_secs(5))
}

/// The 2.x/3.x steps on state type `S`, the payment step named `payment_step`.
fn steps_2_x<S: OrderShape>(
    version: WorkflowVersion<OrderInput, S, OrderOutput>,
    payment_step: &str,
) -> WorkflowVersion<OrderInput, S, OrderOutput> {
    version
        .signal_type::<Payment>(PAYMENT_SIGNAL)
        .step("validate", validate)
        .step("authorize_payment", authorize_payment)
        .step(payment_step, collect_payment)
        .step_with_retry("fraud_check", fraud_check, fraud_retry())
        .step_with_retry("reserve", reserve, reserve_retry())
        .step("ship", ship)
}

/// Version 2.0.0: authorises payment first, checks for fraud, then reserves and ships; state
/// schema 2.
pub fn v2_0() -> WorkflowVersion<OrderInput, OrderStateV2, OrderOutput> {
    steps_2_x(
        WorkflowVersion::new(WORKFLOW, "2.0.0").state_schema(2).init(init_v2),
        "collect_payment",
    )
}

/// Version 3.0.0: 2.0.0 with `collect_payment` renamed `capture_payment`; state schema 3.
pub fn v3_0() -> WorkflowVersion<OrderInput, OrderStateV3, OrderOutput> {
    steps_2_x(
        WorkflowVersion::new(WORKFLOW, "3.0.0").state_schema(3).init(init_v3),
        "capture_payment",
    )
}

/// The steps a fully paid order visits on `version`, in order: what its `history` must show.
pub fn expected_history(version: &str) -> Vec<String> {
    let steps: &[&str] = match version {
        "1.0.0" => &["validate", "reserve", "charge", "ship"],
        "1.1.0" => &["validate", "reserve", "charge", "ship", "notify_customer"],
        "3.0.0" => &[
            "validate",
            "authorize_payment",
            "capture_payment",
            "fraud_check",
            "reserve",
            "ship",
        ],
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
