//! State migrations: typed functions from schema `n` to `n + 1`, their optional inverses, and the
//! per-workflow chains they form.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A mistake in a set of migrations, reported when it is registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// A migration does not go from one schema to the next.
    #[error("workflow '{workflow}': a migration must go from schema n to n+1, not {from} → {to}; register one migration per step")]
    SkipsSchema {
        /// The workflow.
        workflow: String,
        /// Its source schema.
        from: u32,
        /// Its target schema.
        to: u32,
    },
    /// Two migrations start from the same schema.
    #[error("workflow '{workflow}': two migrations from schema {from}; keep one path per step")]
    Duplicate {
        /// The workflow.
        workflow: String,
        /// The schema both start from.
        from: u32,
    },
    /// The chain has a hole: a migration from a higher schema exists but none from `missing`.
    #[error("workflow '{workflow}': migrations from schema {below} and {above} exist but none from {missing} to {next}; register it to close the chain", next = missing + 1)]
    Gap {
        /// The workflow.
        workflow: String,
        /// The last schema before the hole with a migration.
        below: u32,
        /// The first schema after the hole with a migration.
        above: u32,
        /// The first schema without a migration.
        missing: u32,
    },
}

/// Why one record's state could not be migrated. The record is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationFailure {
    /// No migration covers a step of the way.
    #[error("no migration of '{workflow}' from schema {from} to {to}; register one")]
    NoPath {
        /// The workflow.
        workflow: String,
        /// The schema the step starts from.
        from: u32,
        /// The schema the step goes to.
        to: u32,
    },
    /// The way back needs an inverse that the migration does not declare.
    #[error("the migration of '{workflow}' from schema {from} to {to} has no inverse; declare one with .with_inverse(...) to move state back")]
    NoInverse {
        /// The workflow.
        workflow: String,
        /// The forward migration's source schema.
        from: u32,
        /// The forward migration's target schema.
        to: u32,
    },
    /// The function returned an error, or the state did not decode or encode.
    #[error("migrating '{workflow}' state from schema {from} to {to} failed: {reason}")]
    Failed {
        /// The workflow.
        workflow: String,
        /// The source schema of the failing step.
        from: u32,
        /// Its target schema.
        to: u32,
        /// What the function or the codec said.
        reason: String,
    },
    /// The function panicked.
    #[error("migrating '{workflow}' state from schema {from} to {to} panicked: {message}")]
    Panicked {
        /// The workflow.
        workflow: String,
        /// The source schema of the failing step.
        from: u32,
        /// Its target schema.
        to: u32,
        /// The panic's message.
        message: String,
    },
}

type ErasedMigrationFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

fn erase<A, B>(function: impl Fn(A) -> Result<B, String> + Send + Sync + 'static) -> ErasedMigrationFn
where
    A: DeserializeOwned,
    B: Serialize,
{
    Arc::new(move |bytes: &[u8]| {
        let old: A = crate::instance::decode_stored(bytes)
            .map_err(|error| format!("the stored state does not decode: {error}"))?;
        let new = function(old)?;
        rmp_serde::to_vec_named(&new).map_err(|error| format!("the migrated state does not encode: {error}"))
    })
}

/// A typed migration of one workflow's state from schema `from` to `from + 1`, with an optional
/// inverse that moves state back (used when instances move to an older version).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use strata_core::migrate::StateMigration;
///
/// #[derive(Serialize, Deserialize)]
/// struct V1 { name: String }
/// #[derive(Serialize, Deserialize)]
/// struct V2 { first: String, last: String }
///
/// let migration = StateMigration::new("greeting", 1, 2, |old: V1| {
///     let (first, last) = old.name.split_once(' ').ok_or("no space in the name")?;
///     Ok(V2 { first: first.into(), last: last.into() })
/// })
/// .with_inverse(|new: V2| Ok(V1 { name: format!("{} {}", new.first, new.last) }));
/// ```
#[derive(Clone)]
pub struct StateMigration {
    workflow: String,
    from: u32,
    to: u32,
    forward: ErasedMigrationFn,
    inverse: Option<ErasedMigrationFn>,
}

impl std::fmt::Debug for StateMigration {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StateMigration")
            .field("workflow", &self.workflow)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("has_inverse", &self.inverse.is_some())
            .finish()
    }
}

impl StateMigration {
    /// A migration of `workflow`'s state from schema `from` (type `A`) to `to` (type `B`).
    /// `to` must be `from + 1`; registration refuses anything else.
    pub fn new<A, B>(
        workflow: impl Into<String>,
        from: u32,
        to: u32,
        migrate: impl Fn(A) -> Result<B, String> + Send + Sync + 'static,
    ) -> Self
    where
        A: DeserializeOwned + 'static,
        B: Serialize + 'static,
    {
        StateMigration {
            workflow: workflow.into(),
            from,
            to,
            forward: erase(migrate),
            inverse: None,
        }
    }

    /// Declares the inverse, from schema `to` back to `from`.
    pub fn with_inverse<A, B>(mut self, inverse: impl Fn(B) -> Result<A, String> + Send + Sync + 'static) -> Self
    where
        A: Serialize + 'static,
        B: DeserializeOwned + 'static,
    {
        self.inverse = Some(erase(inverse));
        self
    }

    /// The workflow whose state it migrates.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The source schema.
    pub fn from_schema(&self) -> u32 {
        self.from
    }

    /// Runs the forward function on an encoded state (MessagePack of schema `from`) and returns
    /// the encoded result: for testing a migration on real stored states, and for measuring it.
    pub fn run_on(&self, encoded_state: &[u8]) -> Result<Vec<u8>, String> {
        (self.forward)(encoded_state)
    }

    /// Whether an inverse is declared.
    pub fn has_inverse(&self) -> bool {
        self.inverse.is_some()
    }
}

/// Every registered migration, by workflow and source schema.
#[derive(Default, Clone)]
pub struct MigrationChains {
    chains: HashMap<String, BTreeMap<u32, StateMigration>>,
}

impl MigrationChains {
    /// Registers migrations, refusing a schema skip, a second path for one step, or a hole in a
    /// chain. The chain is checked once all are in, so they may come in any order; on error
    /// nothing changes.
    pub fn register_all(&mut self, migrations: Vec<StateMigration>) -> Result<(), MigrationError> {
        let mut staged = self.chains.clone();
        for migration in migrations {
            let workflow = migration.workflow.clone();
            if migration.to != migration.from.saturating_add(1) {
                return Err(MigrationError::SkipsSchema {
                    workflow,
                    from: migration.from,
                    to: migration.to,
                });
            }
            let chain = staged.entry(workflow.clone()).or_default();
            if chain.contains_key(&migration.from) {
                return Err(MigrationError::Duplicate {
                    workflow,
                    from: migration.from,
                });
            }
            chain.insert(migration.from, migration);
        }
        for (workflow, chain) in &staged {
            Self::check_contiguous(workflow, chain)?;
        }
        self.chains = staged;
        Ok(())
    }

    fn check_contiguous(workflow: &str, chain: &BTreeMap<u32, StateMigration>) -> Result<(), MigrationError> {
        let mut previous: Option<u32> = None;
        for &from in chain.keys() {
            if let Some(below) = previous {
                if from != below + 1 {
                    return Err(MigrationError::Gap {
                        workflow: workflow.to_string(),
                        below,
                        above: from,
                        missing: below + 1,
                    });
                }
            }
            previous = Some(from);
        }
        Ok(())
    }

    /// Whether state of `workflow` can go from schema `from` to `to` (without running anything).
    pub fn path_exists(&self, workflow: &str, from: u32, to: u32) -> Result<(), MigrationFailure> {
        self.walk(workflow, from, to, |_, _| Ok(()))
    }

    /// Migrates encoded state from schema `from` to `to`, forward through migrations or backward
    /// through their inverses. A panic in a function is caught and reported.
    pub fn migrate(&self, workflow: &str, bytes: &[u8], from: u32, to: u32) -> Result<Vec<u8>, MigrationFailure> {
        let mut current = bytes.to_vec();
        self.walk(workflow, from, to, |function, (step_from, step_to)| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| function(&current)));
            current = match outcome {
                Ok(Ok(next)) => next,
                Ok(Err(reason)) => {
                    return Err(MigrationFailure::Failed {
                        workflow: workflow.to_string(),
                        from: step_from,
                        to: step_to,
                        reason,
                    })
                }
                Err(panic) => {
                    return Err(MigrationFailure::Panicked {
                        workflow: workflow.to_string(),
                        from: step_from,
                        to: step_to,
                        message: crate::workflow::panic_message(&panic),
                    })
                }
            };
            Ok(())
        })?;
        Ok(current)
    }

    /// Visits the functions from `from` to `to` in order with the schemas of each step.
    fn walk(
        &self,
        workflow: &str,
        from: u32,
        to: u32,
        mut visit: impl FnMut(&ErasedMigrationFn, (u32, u32)) -> Result<(), MigrationFailure>,
    ) -> Result<(), MigrationFailure> {
        let chain = self.chains.get(workflow);
        let step = |schema: u32| chain.and_then(|chain| chain.get(&schema));
        if from <= to {
            for schema in from..to {
                let migration = step(schema).ok_or_else(|| MigrationFailure::NoPath {
                    workflow: workflow.to_string(),
                    from: schema,
                    to: schema + 1,
                })?;
                visit(&migration.forward, (schema, schema + 1))?;
            }
        } else {
            for schema in (to..from).rev() {
                let migration = step(schema).ok_or_else(|| MigrationFailure::NoPath {
                    workflow: workflow.to_string(),
                    from: schema + 1,
                    to: schema,
                })?;
                let inverse = migration.inverse.as_ref().ok_or_else(|| MigrationFailure::NoInverse {
                    workflow: workflow.to_string(),
                    from: schema,
                    to: schema + 1,
                })?;
                visit(inverse, (schema + 1, schema))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn add(workflow: &str, from: u32, amount: u64) -> StateMigration {
        StateMigration::new(workflow, from, from + 1, move |value: u64| Ok(value + amount))
            .with_inverse(move |value: u64| Ok::<u64, String>(value - amount))
    }

    fn run(chains: &MigrationChains, value: u64, from: u32, to: u32) -> Result<u64, MigrationFailure> {
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        let out = chains.migrate("w", &bytes, from, to)?;
        Ok(rmp_serde::from_slice(&out).unwrap())
    }

    #[test]
    fn a_chain_composes_forward_and_back_through_inverses() {
        let mut chains = MigrationChains::default();
        chains.register_all(vec![add("w", 1, 10)]).unwrap();
        chains.register_all(vec![add("w", 2, 100)]).unwrap();
        chains.register_all(vec![add("w", 3, 1000)]).unwrap();
        assert_eq!(run(&chains, 0, 1, 4).unwrap(), 1110);
        assert_eq!(run(&chains, 0, 2, 3).unwrap(), 100);
        assert_eq!(run(&chains, 1110, 4, 1).unwrap(), 0);
        assert_eq!(run(&chains, 7, 3, 3).unwrap(), 7);
    }

    #[test]
    fn registration_refuses_skips_duplicates_and_gaps() {
        let mut chains = MigrationChains::default();
        let skip = StateMigration::new("w", 1, 3, |value: u64| Ok(value));
        assert_eq!(
            chains.register_all(vec![skip]).unwrap_err(),
            MigrationError::SkipsSchema {
                workflow: "w".into(),
                from: 1,
                to: 3
            }
        );
        chains.register_all(vec![add("w", 1, 1)]).unwrap();
        assert_eq!(
            chains.register_all(vec![add("w", 1, 2)]).unwrap_err(),
            MigrationError::Duplicate {
                workflow: "w".into(),
                from: 1
            }
        );
        let gap = chains.register_all(vec![add("w", 3, 1)]).unwrap_err();
        assert_eq!(
            gap,
            MigrationError::Gap {
                workflow: "w".into(),
                below: 1,
                above: 3,
                missing: 2
            }
        );
        assert!(gap.to_string().contains("none from 2 to 3"), "{gap}");
        // The refused migrations left the chain as it was; other workflows are independent.
        chains.register_all(vec![add("w", 2, 1)]).unwrap();
        chains.register_all(vec![add("other", 5, 1)]).unwrap();
        // Registered together, order does not matter, but a hole still does.
        let mut together = MigrationChains::default();
        together.register_all(vec![add("w", 2, 1), add("w", 1, 1)]).unwrap();
        let mut holed = MigrationChains::default();
        assert!(matches!(
            holed.register_all(vec![add("w", 3, 1), add("w", 1, 1)]),
            Err(MigrationError::Gap { missing: 2, .. })
        ));
    }

    #[test]
    fn missing_steps_and_inverses_are_named() {
        let mut chains = MigrationChains::default();
        chains
            .register_all(vec![StateMigration::new("w", 1, 2, |value: u64| Ok(value))])
            .unwrap();
        assert_eq!(
            chains.path_exists("w", 1, 3).unwrap_err(),
            MigrationFailure::NoPath {
                workflow: "w".into(),
                from: 2,
                to: 3
            }
        );
        assert!(matches!(
            chains.path_exists("w", 2, 1),
            Err(MigrationFailure::NoInverse { from: 1, to: 2, .. })
        ));
        assert!(chains.path_exists("unknown", 1, 1).is_ok());
    }

    #[test]
    fn failing_and_panicking_functions_are_reported_not_propagated() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let mut chains = MigrationChains::default();
        chains
            .register_all(vec![StateMigration::new("w", 1, 2, move |value: u64| {
                counted.fetch_add(1, Ordering::Relaxed);
                match value {
                    13 => Err("unlucky".to_string()),
                    666 => panic!("the devil's number"),
                    other => Ok(other),
                }
            })])
            .unwrap();
        assert!(matches!(run(&chains, 13, 1, 2), Err(MigrationFailure::Failed { reason, .. }) if reason == "unlucky"));
        assert!(
            matches!(run(&chains, 666, 1, 2), Err(MigrationFailure::Panicked { message, .. }) if message.contains("devil"))
        );
        let garbage = chains.migrate("w", b"\xc1", 1, 2).unwrap_err();
        assert!(garbage.to_string().contains("does not decode"), "{garbage}");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
