//! State migration: migration chains, step mappings, the rules of moving instances between
//! versions and of reviving ended ones, and the records of background migration jobs.
//!
//! Owns the migration functions and step mappings, the rules that decide whether an instance can
//! move and what its record becomes, and the types of background jobs. It transforms records and
//! never commits: the runtime claims instances at step boundaries and commits what this module
//! computed, so every move and every migrated record is one commit (invariants 1 and 6).

mod chain;
mod job;
mod moves;
mod revive;

pub use chain::{MigrationChains, MigrationError, MigrationFailure, StateMigration};
pub use job::{MigrationFailureReport, MigrationJob, MigrationJobRecord, MigrationProgress, MigrationState};
pub use moves::{MoveCheck, MoveContext, MovePlan, MoveRefusal, MoveReport, MoveRequest, StepMapping, StepMappings};
pub use revive::{ReviveCheck, RevivePlan, ReviveRefusal, ReviveReport, ReviveRequest};
