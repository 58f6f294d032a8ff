//! strata-core: Strata's vocabulary and its definition API, with no I/O and no async runtime.
//!
//! Owns what every other Strata crate speaks of: instance records and ids ([`instance`]), a
//! version's status and counts ([`version`]), how a workflow version is defined ([`workflow`]),
//! routing specs and the sticky routing table ([`routing`]), what steps record of their cost and
//! quality ([`measure`]), shadow runs compared ([`shadow`]), what an instance's history keeps
//! ([`history`]), rollout specs and the stage and gate
//! decision rule ([`rollout`]), state migrations and moves ([`migrate`]), and the shared rules of
//! stored bytes and time ([`codec`], [`time`]). It depends on no other Strata crate, and stores,
//! the engine and the CLI depend on it; nothing here reads a clock, a file or the network.

#![warn(missing_docs)]

pub mod codec;
pub mod history;
pub mod instance;
pub mod measure;
pub mod migrate;
pub mod periodic;
pub mod rollout;
pub mod routing;
pub mod shadow;
pub mod suggest;
pub mod time;
pub mod version;
pub mod workflow;
