//! State migration: schemas, migration chains, lazy and background migration, and moving
//! instances between versions.
//!
//! Owns the migration functions and step mappings, the rules that decide whether an instance can
//! move and what its record becomes, and the types of background jobs. It transforms records and
//! never commits: the runtime claims instances at step boundaries and commits what this module
//! computed, so every move and every migrated record is one commit (invariants 1 and 6).

mod chain;
mod job;
mod moves;

pub(crate) use chain::MigrationChains;
pub use chain::{MigrationError, MigrationFailure, StateMigration};
pub(crate) use job::JobControl;
pub use job::{
    MigrationFailureReport, MigrationHandle, MigrationJob, MigrationJobRecord, MigrationProgress, MigrationState,
};
pub use moves::{MoveCheck, MovePlan, MoveRefusal, MoveReport, MoveRequest, StepMapping};
pub(crate) use moves::{MoveContext, StepMappings};
