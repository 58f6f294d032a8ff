//! Real workflows in several versions, used by Strata's examples, tests and benchmarks.
//!
//! - [`order`]: order fulfilment in 1.0.0, 1.1.0 (an additive change) and 2.0.0 (a changed step
//!   sequence), with a durable sleep, a signal wait with timeout and retried steps.
//! - [`onboarding`]: customer onboarding with reminders in a loop until an activation signal.
//! - [`ledger`]: posts a batch of ledger entries, one step per entry; the benchmarks' step load.
//! - [`approval`]: waits up to a day for an approver's decision; the recovery and memory load.
//!
//! Every step appends `step@version` to the state's `history`, so a test can see which version's
//! code ran each step of an instance.

#![warn(missing_docs)]

pub mod approval;
pub mod ledger;
pub mod onboarding;
pub mod order;
