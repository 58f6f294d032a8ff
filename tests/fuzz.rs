//! Fuzzing in the suite, bounded (issue #12): the config parser and validator, and the decoders of
//! every stored record, fed random and damaged input. Each input gets a value or a typed error —
//! never a panic, an abort or a hang (each case runs in a forked child with a time limit, so a
//! stack overflow or an endless loop is a failure that proptest shrinks and records). Failures
//! found are kept in proptest-regressions/fuzz.txt and replayed first on every run. It found that
//! a run of one-element array markers in a damaged record recursed deep enough to overflow the
//! stack and abort the process: decoding is now bounded (`instance::decode_stored`).

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use strata::history::{decode_entries, AttemptOutcome, HistoryBook, HistoryEntry, HistoryEvent, StepEntry, WokenBy};
use strata::instance::{InstanceRecord, PersistedWake, Phase, ScheduledFire, StateEnvelope};
use strata::migrate::MigrationJobRecord;
use strata::prelude::*;
use strata::store::{AppliedConfig, SignalRecord};
use strata::{Engine, InstanceId, VersionKey};

/// The documented example config: a valid file to damage.
const EXAMPLE: &str = include_str!("../strata.example.toml");

fn fuzzing() -> ProptestConfig {
    ProptestConfig {
        cases: 2_048,
        // A case that takes more than this is a hang (timeout implies a forked child per run).
        timeout: 10_000,
        // Kept beside the other regressions and replayed first on every run.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A damage done to a valid input.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip the bits of `mask` in the byte at `at`.
    Flip { at: usize, mask: u8 },
    /// Cut everything from `at`.
    Truncate { at: usize },
    /// Remove `length` bytes at `at`.
    Remove { at: usize, length: usize },
    /// Insert `bytes` at `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Repeat `length` bytes at `at` `times` times (nesting, long runs).
    Repeat { at: usize, length: usize, times: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), 1..64usize).prop_map(|(at, length)| Damage::Remove { at, length }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1..8usize, 2..2_000usize).prop_map(|(at, length, times)| Damage::Repeat { at, length, times }),
    ]
}

fn damaged(valid: &[u8], damages: &[Damage]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for damage in damages {
        let at = |position: usize, bytes: &Vec<u8>| if bytes.is_empty() { 0 } else { position % bytes.len() };
        match damage {
            Damage::Flip { at: position, mask } => {
                if !bytes.is_empty() {
                    let index = at(*position, &bytes);
                    bytes[index] ^= mask;
                }
            }
            Damage::Truncate { at: position } => {
                let index = at(*position, &bytes);
                bytes.truncate(index);
            }
            Damage::Remove { at: position, length } => {
                let index = at(*position, &bytes);
                let end = (index + length).min(bytes.len());
                bytes.drain(index..end);
            }
            Damage::Insert {
                at: position,
                bytes: inserted,
            } => {
                let index = at(*position, &bytes);
                bytes.splice(index..index, inserted.iter().copied());
            }
            Damage::Repeat {
                at: position,
                length,
                times,
            } => {
                let index = at(*position, &bytes);
                let end = (index + length).min(bytes.len());
                let run = bytes[index..end].to_vec();
                for _ in 0..*times {
                    bytes.splice(index..index, run.iter().copied());
                }
            }
        }
    }
    bytes
}

fn sample_instance() -> InstanceRecord {
    InstanceRecord {
        format: strata::instance::RECORD_FORMAT,
        id: InstanceId(4_242),
        key: VersionKey::new("order", strata::Version::new(2, 1, 0)),
        step: "collect_payment".to_string(),
        attempt: 2,
        visits: 7,
        phase: Phase::RetryBackoff {
            until_ms: 1_796_000_000_000,
            wake: PersistedWake::Signal {
                name: "payment".to_string(),
                payload: rmp_serde::to_vec_named(&("pay-42", 1_200u64)).unwrap(),
            },
        },
        state: StateEnvelope {
            schema: 2,
            bytes: rmp_serde::to_vec_named(&("acme", vec![1u32, 2, 3], Some("Rue de Rivoli 1"))).unwrap(),
        },
        routing_key: Some("customer-7".to_string()),
        scheduled: Some(ScheduledFire {
            schedule: "nightly".to_string(),
            fire_ms: 1_795_999_000_000,
        }),
        last_error: Some("card declined".to_string()),
        created_at_ms: 1_795_998_000_000,
        updated_at_ms: 1_795_999_500_000,
        moves: Vec::new(),
        pinned_reason: Some("no counterpart step".to_string()),
        history: {
            let mut history = HistoryBook::default();
            history.next = 9;
            history.tail = sample_history_chunk(1);
            history.worker = "host-1/4242".into();
            history
        },
        measures: [(
            "cost_usd".to_string(),
            strata::measure::MeasureTotal {
                sum_units: 6_200,
                count: 2,
            },
        )]
        .into(),
        shadow_of: Some(InstanceId(4_241)),
        shadowed_by: None,
        claim: 3,
    }
}

fn sample_history_entry() -> HistoryEntry {
    HistoryEntry {
        at_ms: 1_795_999_500_000,
        event: HistoryEvent::Step(StepEntry {
            step: "collect_payment".to_string(),
            attempt: 2,
            took_ms: 1_000,
            woken_by: WokenBy::Signal {
                name: "payment".to_string(),
                seq: 17,
                bytes: 24,
            },
            migrated_from_schema: Some(1),
            outcome: AttemptOutcome::Retrying {
                error: "card declined".to_string(),
                at_ms: 1_795_999_501_000,
            },
        }),
    }
}

/// A chunk of `entries` entries as a history writes it (step entries compact, each after a
/// step that named it leaving its name out), the sample entry among them, as the store keeps it.
fn sample_history_chunk(entries: usize) -> Vec<u8> {
    let mut book = HistoryBook::default();
    for number in 0..entries {
        let entry = if number % 3 == 2 {
            sample_history_entry()
        } else {
            HistoryEntry {
                at_ms: 1_795_999_500_000 + number as u64,
                event: HistoryEvent::Step(StepEntry {
                    step: "post".to_string(),
                    attempt: 1,
                    took_ms: 2,
                    woken_by: WokenBy::Previous,
                    migrated_from_schema: None,
                    outcome: AttemptOutcome::Next {
                        step: "post".to_string(),
                    },
                }),
            }
        };
        if let Some((_, chunk)) = book.append(&entry, 1_000).unwrap().chunk {
            return chunk;
        }
    }
    book.tail
}

fn sample_signal() -> SignalRecord {
    SignalRecord {
        format: strata::instance::RECORD_FORMAT,
        instance: InstanceId(4_242),
        seq: 99,
        name: "payment".to_string(),
        payload: rmp_serde::to_vec_named(&("pay-42", 1_200u64)).unwrap(),
    }
}

/// Decodes `bytes` as a `T` the way the stores do; only a panic or an abort fails.
fn decodes_or_refuses<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = strata::instance::decode_stored::<T>(bytes);
}

proptest! {
    #![proptest_config(fuzzing())]

    #[test]
    fn any_text_parses_as_a_config_or_gets_an_error_naming_the_file(text in "(?s).{0,400}") {
        if let Err(error) = strata::config::parse("fuzzed.toml", &text) {
            prop_assert!(error.to_string().contains("fuzzed.toml"), "{error}");
        }
    }

    #[test]
    fn a_damaged_example_config_parses_or_gets_an_error_naming_the_file(damages in proptest::collection::vec(damage(), 1..4)) {
        let text = String::from_utf8_lossy(&damaged(EXAMPLE.as_bytes(), &damages)).into_owned();
        if let Err(error) = strata::config::parse("damaged.toml", &text) {
            prop_assert!(error.to_string().contains("damaged.toml"), "{error}");
        }
    }

    #[test]
    fn damaged_instance_records_decode_or_give_a_reason(damages in proptest::collection::vec(damage(), 1..4)) {
        let valid = rmp_serde::to_vec_named(&sample_instance()).unwrap();
        if let Err(reason) = InstanceRecord::decode(&damaged(&valid, &damages)) {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn damaged_signal_job_and_config_records_decode_or_give_a_reason(damages in proptest::collection::vec(damage(), 1..4)) {
        let signal = rmp_serde::to_vec_named(&sample_signal()).unwrap();
        decodes_or_refuses::<SignalRecord>(&damaged(&signal, &damages));
        let config = rmp_serde::to_vec_named(&AppliedConfig {
            generation: 3,
            source: "strata.toml".to_string(),
            text: EXAMPLE.to_string(),
            applied_at_ms: 1_796_000_000_000,
        })
        .unwrap();
        decodes_or_refuses::<AppliedConfig>(&damaged(&config, &damages));
        decodes_or_refuses::<MigrationJobRecord>(&damaged(&signal, &damages));
        decodes_or_refuses::<strata::rollout::RolloutRecord>(&damaged(&config, &damages));
        // A state or payload read as JSON (the admin API shows them so).
        let state = sample_instance().state.bytes;
        let _ = strata::instance::decode_stored::<serde_json::Value>(&damaged(&state, &damages));
    }

    #[test]
    fn damaged_history_chunks_decode_or_give_a_reason(damages in proptest::collection::vec(damage(), 1..4)) {
        let valid = sample_history_chunk(8);
        if let Err(reason) = decode_entries(16, &damaged(&valid, &damages)) {
            prop_assert!(reason.contains("history entry"), "{reason}");
        }
    }

    #[test]
    fn random_bytes_decode_as_no_record_without_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(reason) = decode_entries(0, &bytes) {
            prop_assert!(!reason.is_empty());
        }
        if let Err(reason) = InstanceRecord::decode(&bytes) {
            prop_assert!(!reason.is_empty());
        }
        decodes_or_refuses::<SignalRecord>(&bytes);
        decodes_or_refuses::<MigrationJobRecord>(&bytes);
        decodes_or_refuses::<strata::rollout::RolloutRecord>(&bytes);
        decodes_or_refuses::<AppliedConfig>(&bytes);
        let _ = strata::instance::decode_stored::<serde_json::Value>(&bytes);
    }
}

/// The validator against a running engine's versions: a damaged config is applied or refused
/// with a typed error, and a refused one changes nothing.
#[test]
fn damaged_configs_checked_against_an_engine_are_applied_or_refused_and_refusals_change_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = runtime.block_on(async {
        let mut builder = Engine::builder()
            .data_dir(dir.path())
            .register(strata_workflows::order::v1_0())
            .register(strata_workflows::order::v2_0())
            .register(strata_workflows::ledger::v1_0());
        for migration in strata_workflows::order::migrations() {
            builder = builder.migration(migration);
        }
        builder.open().await.unwrap()
    });
    let before = engine.config_history().unwrap().len();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(damage(), 1..4), |damages| {
            let text = String::from_utf8_lossy(&damaged(EXAMPLE.as_bytes(), &damages)).into_owned();
            match engine.check_config("damaged.toml", &text) {
                Ok(()) => {}
                Err(error) => prop_assert!(error.to_string().contains("damaged.toml"), "{error}"),
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        engine.config_history().unwrap().len(),
        before,
        "checking applies nothing"
    );
    runtime.block_on(engine.shutdown());
}

/// The crash the fuzzing found, kept: a record that is a long run of one-element array markers
/// (0x91) recursed until the stack overflowed and the process aborted. Every decoder refuses it.
#[test]
fn a_run_of_nested_array_markers_is_refused_by_every_decoder_without_a_stack_overflow() {
    let mut bytes = vec![0x91u8; 200_000];
    bytes.push(0x00);
    assert!(InstanceRecord::decode(&bytes).is_err());
    assert!(strata::instance::decode_stored::<SignalRecord>(&bytes).is_err());
    assert!(strata::instance::decode_stored::<MigrationJobRecord>(&bytes).is_err());
    assert!(strata::instance::decode_stored::<strata::rollout::RolloutRecord>(&bytes).is_err());
    assert!(strata::instance::decode_stored::<AppliedConfig>(&bytes).is_err());
    assert!(strata::instance::decode_stored::<serde_json::Value>(&bytes).is_err());
}
