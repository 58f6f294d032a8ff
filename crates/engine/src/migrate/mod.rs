//! Background migrations as they run in this engine: the control a job's runner shares with its
//! handles. What a migration is (chains, step mappings, moves, job records) is
//! `strata_core::migrate`, re-exported here.

mod job;

pub use job::MigrationHandle;
pub(crate) use job::{JobControl, ShareCounts};
pub use strata_core::migrate::{
    MigrationChains, MigrationError, MigrationFailure, MigrationFailureReport, MigrationJob, MigrationJobRecord,
    MigrationProgress, MigrationState, MoveCheck, MoveContext, MovePlan, MoveRefusal, MoveReport, MoveRequest,
    ReviveCheck, RevivePlan, ReviveRefusal, ReviveReport, ReviveRequest, StateMigration, StepMapping, StepMappings,
};
