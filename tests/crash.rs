//! Crash safety (invariant 2): a real child process running hundreds of instances is killed with
//! SIGKILL at many random moments. After every kill the store is checked directly — every
//! acknowledged start is there, no instance is both live and finished, every live cursor names a
//! step of its version, counters equal a recount, each instance's history agrees with its record
//! (no chunk of a lost commit, none missing, the newest entry says where the record is), each
//! version's measure totals equal what its finished records hold — and at the end every instance
//! completes with the outcome it would have had without crashes, each metered one having
//! recorded each step's measures exactly once however often it was killed between an attempt and
//! its commit.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use strata::history::{decode_entries, AttemptOutcome, HistoryEntry, HistoryEvent, HISTORY_CHUNK};
use strata::instance::{InstanceRecord, Phase};
use strata::store::{SledStore, Store, StoredHistoryChunk};
use strata::{InstanceFilter, InstanceId, Outcome, VersionKey};
use strata_store::VersionCounters;
use strata_workflows::ledger::{LedgerInput, LedgerState};
use strata_workflows::onboarding::{OnboardingInput, OnboardingOutput, OnboardingState};
use strata_workflows::order::{OrderOutput, OrderState};
use strata_workflows::{ledger, onboarding, order};

const CHILD_DIR: &str = "STRATA_CRASH_CHILD_DIR";
const TARGET_INSTANCES: u64 = 600;
const KILLS: usize = 60;
const LEDGER_ENTRIES: u32 = 400;

fn ledger_input(ordinal: u64) -> LedgerInput {
    LedgerInput {
        account: ordinal,
        entries: LEDGER_ENTRIES,
    }
}

fn onboarding_input(ordinal: u64) -> OnboardingInput {
    // Even ordinals are activated by a signal; odd ones time out after every reminder.
    let activated = ordinal % 2 == 0;
    OnboardingInput {
        customer: format!("c-{ordinal}"),
        reminder_after_ms: if activated { 600_000 } else { 15 },
        max_reminders: 2,
    }
}

fn payment_for(state: &OrderState) -> order::Payment {
    common::full_payment(&state.input)
}

/// A workflow whose steps record measures: three steps, each costing 0.25 and 10 tokens; the
/// second fails its first attempt on even inputs (after recording, which must not count).
mod metered {
    use strata::{MeasureKind, Next, RetryPolicy, StepCtx, StepError, StepResult, WorkflowVersion};

    pub(crate) const WORKFLOW: &str = "metered";
    pub(crate) const STEPS: [&str; 3] = ["quote", "call", "settle"];

    async fn quote(ctx: StepCtx, _input: &mut u64) -> StepResult<u64> {
        ctx.record("cost", 0.25);
        ctx.record("tokens", 10.0);
        Ok(Next::goto("call"))
    }

    async fn call(ctx: StepCtx, input: &mut u64) -> StepResult<u64> {
        ctx.record("cost", 0.25);
        ctx.record("tokens", 10.0);
        if *input % 2 == 0 && ctx.attempt() == 1 {
            return Err(StepError::retryable("the provider timed out"));
        }
        Ok(Next::goto("settle"))
    }

    async fn settle(ctx: StepCtx, input: &mut u64) -> StepResult<u64> {
        ctx.record("cost", 0.25);
        ctx.record("tokens", 10.0);
        Ok(Next::complete(*input))
    }

    pub(crate) fn v1_0() -> WorkflowVersion<u64, u64, u64> {
        WorkflowVersion::new(WORKFLOW, "1.0.0")
            .init(|input: u64| input)
            .measure("cost", MeasureKind::Summed)
            .measure("tokens", MeasureKind::Summed)
            .default_retry(RetryPolicy::exponential(3, std::time::Duration::from_millis(2)))
            .step("quote", quote)
            .step("call", call)
            .step("settle", settle)
    }
}

/// The child: runs the workload until every instance has finished, printing each acknowledged
/// start. Run by the parent test as a separate process; ignored in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of kill_nine_at_random_points_loses_nothing"]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let engine = common::builder(Path::new(&dir))
        .register(order::v1_0())
        .register(onboarding::v1_0())
        .register(ledger::v1_0())
        .register(metered::v1_0())
        .max_concurrent_steps(8)
        .open()
        .await
        .expect("child: open");
    println!("STRATA ready");
    // Re-deliver signals that may have been lost with an earlier process (duplicates are harmless).
    let live = engine
        .list(&InstanceFilter::default())
        .unwrap()
        .into_iter()
        .filter(|info| !info.status.is_terminal());
    for info in live {
        signal_if_needed(&engine, info.id(), info.workflow(), &info).await;
    }
    let already: u64 = engine.versions().iter().map(|info| info.counters.started).sum();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(already));
    let mut starters = Vec::new();
    for _ in 0..8 {
        let engine = engine.clone();
        let next = next.clone();
        starters.push(tokio::spawn(async move {
            loop {
                let ordinal = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ordinal >= TARGET_INSTANCES {
                    return;
                }
                let id = match ordinal % 4 {
                    0 => engine.start(ledger::WORKFLOW, &ledger_input(ordinal)).await,
                    1 => engine.start(order::WORKFLOW, &common::small_order(ordinal)).await,
                    2 => engine.start(onboarding::WORKFLOW, &onboarding_input(ordinal)).await,
                    _ => engine.start(metered::WORKFLOW, &ordinal).await,
                }
                .expect("child: start");
                println!("STRATA started {id}");
                let info = engine.instance(id).expect("child: inspect");
                signal_if_needed(&engine, id, info.workflow(), &info).await;
            }
        }));
    }
    for starter in starters {
        starter.await.unwrap();
    }
    let mut events = engine.subscribe();
    while engine.live_instances() > 0 {
        let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
    }
    println!("STRATA all done");
    engine.shutdown().await;
}

async fn signal_if_needed(engine: &strata::Engine, id: InstanceId, workflow: &str, info: &strata::InstanceInfo) {
    let result = match workflow {
        order::WORKFLOW => {
            let state: OrderState = info.state().unwrap();
            engine.signal(id, order::PAYMENT_SIGNAL, &payment_for(&state)).await
        }
        onboarding::WORKFLOW => {
            let state: OnboardingState = info.state().unwrap();
            if state.input.reminder_after_ms < 1_000 {
                return;
            }
            engine.signal(id, onboarding::ACTIVATED_SIGNAL, &()).await
        }
        _ => return,
    };
    match result {
        Ok(()) | Err(strata::EngineError::InstanceFinished { .. }) => {}
        Err(error) => panic!("child: signal failed: {error}"),
    }
}

struct Snapshot {
    live: Vec<InstanceRecord>,
    finished: Vec<InstanceRecord>,
    counters: BTreeMap<VersionKey, VersionCounters>,
    /// Each instance's stored history chunks, oldest first.
    histories: BTreeMap<u64, Vec<StoredHistoryChunk>>,
}

/// History and state never disagree: the chunks stored are the ones the record's book counts
/// (no chunk of a commit that was lost, none missing), each whole and readable, the first entry
/// is the start, and the newest entry says where the record is.
fn check_history(record: &InstanceRecord, chunks: &[StoredHistoryChunk]) {
    let id = record.id;
    let book = &record.history;
    assert!(book.next > 0, "instance {id} has no history");
    let mut expected: Vec<u64> = Vec::new();
    if book.tail_first() > 0 {
        expected.push(0);
        expected.extend((HISTORY_CHUNK + book.folded..book.tail_first()).step_by(HISTORY_CHUNK as usize));
    }
    assert_eq!(
        chunks.iter().map(|chunk| chunk.first).collect::<Vec<_>>(),
        expected,
        "instance {id}: the stored chunks disagree with its book (next {}, folded {})",
        book.next,
        book.folded
    );
    let mut entries = Vec::new();
    for chunk in chunks {
        let decoded =
            decode_entries(chunk.first, &chunk.entries).unwrap_or_else(|error| panic!("instance {id}: {error}"));
        assert_eq!(
            decoded.len() as u64,
            HISTORY_CHUNK,
            "instance {id}: chunk {} is not whole",
            chunk.first
        );
        entries.extend(decoded);
    }
    entries.extend(
        book.tail_entries()
            .unwrap_or_else(|error| panic!("instance {id}: {error}")),
    );
    assert!(
        matches!(entries[0].1.event, HistoryEvent::Started { .. }),
        "instance {id}: the first entry is not its start"
    );
    let (last_seq, _) = entries.last().unwrap_or_else(|| panic!("instance {id}: no entry"));
    assert_eq!(
        *last_seq,
        book.next - 1,
        "instance {id}: the newest entry is not the book's last"
    );
    // The signals an instance never consumed are noted after the entry that ended it, in the
    // same commit: only an ended instance has that note, and the entry before it says how.
    let mut newest = entries.iter().rev().map(|(_, entry)| entry).peekable();
    if let Some(HistoryEntry {
        event: HistoryEvent::SignalsDropped { .. },
        ..
    }) = newest.peek()
    {
        assert!(
            record.phase.is_terminal(),
            "instance {id}: signals noted as dropped while it lives ({:?})",
            record.phase
        );
        newest.next();
    }
    let last = newest
        .next()
        .unwrap_or_else(|| panic!("instance {id}: nothing before its dropped signals"));
    let agrees = match (&last.event, &record.phase) {
        (HistoryEvent::Started { .. }, _) => record.visits == 0,
        (HistoryEvent::Step(step), phase) => match (&step.outcome, phase) {
            (AttemptOutcome::Next { step }, Phase::Ready { .. }) => *step == record.step,
            (AttemptOutcome::Sleep { step, until_ms }, Phase::Sleeping { until_ms: due }) => {
                *step == record.step && until_ms == due
            }
            (AttemptOutcome::AwaitSignal { step, name, .. }, Phase::WaitingSignal { name: awaited, .. }) => {
                *step == record.step && name == awaited
            }
            (AttemptOutcome::Retrying { at_ms, .. }, Phase::RetryBackoff { until_ms, .. }) => at_ms == until_ms,
            (AttemptOutcome::Completed { .. }, Phase::Completed { .. }) => true,
            (AttemptOutcome::Failed { .. }, Phase::Failed { .. }) => true,
            _ => false,
        },
        (HistoryEvent::Cancelled | HistoryEvent::Terminated { .. }, Phase::Cancelled) => true,
        _ => false,
    };
    assert!(
        agrees,
        "instance {id}: its newest history entry {last:?} disagrees with its record (step {}, {:?})",
        record.step, record.phase
    );
}

fn read_store(dir: &Path) -> Snapshot {
    let store = SledStore::open(dir).expect("parent: open store after kill");
    let recovered = store.recover(u64::MAX).expect("parent: recover");
    assert!(
        recovered.corrupt.is_empty(),
        "corrupt records after a kill: {:?}",
        recovered.corrupt
    );
    let finished = store
        .finished_instances(&Default::default(), &mut |_| true, usize::MAX)
        .unwrap();
    let histories = recovered
        .live
        .iter()
        .chain(&finished)
        .map(|record| (record.id.0, store.history(record.id).unwrap()))
        .collect();
    Snapshot {
        histories,
        live: recovered.live,
        finished,
        counters: recovered
            .versions
            .into_iter()
            .map(|stored| (stored.key, stored.counters))
            .collect(),
    }
}

fn step_names(workflow: &str) -> &'static [&'static str] {
    match workflow {
        order::WORKFLOW => &["validate", "reserve", "charge", "ship"],
        onboarding::WORKFLOW => &["welcome", "follow_up"],
        metered::WORKFLOW => &metered::STEPS,
        _ => &["post"],
    }
}

fn check_invariants(snapshot: &Snapshot, acknowledged: &HashSet<u64>) {
    let live_ids: HashSet<u64> = snapshot.live.iter().map(|record| record.id.0).collect();
    let finished_ids: HashSet<u64> = snapshot.finished.iter().map(|record| record.id.0).collect();
    assert_eq!(live_ids.len(), snapshot.live.len(), "an id is live twice");
    assert!(
        live_ids.is_disjoint(&finished_ids),
        "an instance is both live and finished"
    );
    for id in acknowledged {
        assert!(
            live_ids.contains(id) || finished_ids.contains(id),
            "acknowledged instance {id} was lost"
        );
    }
    for record in &snapshot.live {
        assert!(!record.phase.is_terminal());
        assert!(
            step_names(&record.key.workflow).contains(&record.step.as_str()),
            "instance {} is at '{}', not a step boundary of {}",
            record.id,
            record.step,
            record.key
        );
    }
    let mut recount: BTreeMap<VersionKey, VersionCounters> = BTreeMap::new();
    for record in &snapshot.live {
        recount.entry(record.key.clone()).or_default().live += 1;
    }
    for record in &snapshot.finished {
        let counters = recount.entry(record.key.clone()).or_default();
        match record.phase {
            Phase::Completed { .. } => counters.completed += 1,
            Phase::Failed { .. } => counters.failed += 1,
            _ => counters.cancelled += 1,
        }
    }
    for record in &snapshot.finished {
        let counters = recount.entry(record.key.clone()).or_default();
        strata::measure::add_totals(&mut counters.measures, &record.measures);
    }
    for (key, stored) in &snapshot.counters {
        let counted = recount.get(key).cloned().unwrap_or_default();
        assert_eq!(
            stored.measures, counted.measures,
            "{key}: measure totals are what the finished records hold"
        );
        assert_eq!(stored.live, counted.live, "{key}: live counter");
        assert_eq!(stored.completed, counted.completed, "{key}: completed counter");
        assert_eq!(stored.failed, counted.failed, "{key}: failed counter");
        assert_eq!(stored.cancelled, counted.cancelled, "{key}: cancelled counter");
        assert_eq!(
            stored.started,
            counted.live + counted.completed + counted.failed + counted.cancelled,
            "{key}: started"
        );
    }
    for key in recount.keys() {
        assert!(snapshot.counters.contains_key(key), "{key} has records but no counters");
    }
    for record in snapshot.live.iter().chain(&snapshot.finished) {
        check_history(record, &snapshot.histories[&record.id.0]);
    }
}

fn check_outcome(record: &InstanceRecord) {
    let Some(Outcome::Completed(output)) = Outcome::from_record(record) else {
        panic!("instance {} did not complete: {:?}", record.id, record.phase);
    };
    let state = &record.state.bytes;
    match record.key.workflow.as_str() {
        order::WORKFLOW => {
            let output: OrderOutput = rmp_serde::from_slice(&output).unwrap();
            let state: OrderState = rmp_serde::from_slice(state).unwrap();
            assert_eq!(output.status, "shipped", "instance {}", record.id);
            assert_eq!(output.total_cents, state.input.total_cents());
            assert_eq!(
                state.history,
                order::expected_history("1.0.0"),
                "instance {}",
                record.id
            );
        }
        onboarding::WORKFLOW => {
            let output: OnboardingOutput = rmp_serde::from_slice(&output).unwrap();
            let state: OnboardingState = rmp_serde::from_slice(state).unwrap();
            let activated = state.input.reminder_after_ms > 1_000;
            assert_eq!(output.activated, activated, "instance {}", record.id);
            assert_eq!(
                output.reminders_sent,
                if activated { 0 } else { 2 },
                "instance {}",
                record.id
            );
            assert_eq!(
                state.outbox.len() as u32,
                1 + output.reminders_sent,
                "a message was sent twice"
            );
        }
        metered::WORKFLOW => {
            let each = |sum: f64| strata::measure::MeasureTotal {
                sum_units: strata::measure::to_units(sum),
                count: 3,
            };
            assert_eq!(
                record.measures,
                [("cost".to_string(), each(0.75)), ("tokens".to_string(), each(30.0))].into(),
                "metered instance {}: each step's measures once",
                record.id
            );
        }
        _ => {
            let balance: i64 = rmp_serde::from_slice(&output).unwrap();
            let state: LedgerState = rmp_serde::from_slice(state).unwrap();
            let expected = ledger::expected_balance(state.account, LEDGER_ENTRIES);
            assert_eq!(balance, expected, "ledger {} balance", state.account);
            assert_eq!(
                state.posted, LEDGER_ENTRIES,
                "ledger {} posted each entry once",
                state.account
            );
        }
    }
}

fn run_child(dir: &Path, acknowledged: &Arc<Mutex<HashSet<u64>>>, kill_after: Option<Duration>) -> bool {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let sink = acknowledged.clone();
    let reader = std::thread::spawn(move || {
        let mut finished = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line
                .strip_prefix("STRATA started ")
                .and_then(|id| id.trim().parse::<u64>().ok())
            {
                sink.lock().unwrap().insert(id);
            }
            finished |= line == "STRATA all done";
        }
        finished
    });
    match kill_after {
        Some(delay) => {
            std::thread::sleep(delay); // picks the kill moment; not a synchronisation
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
            reader.join().unwrap()
        }
        None => {
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("the final child run did not finish the workload within 180 s");
                }
                std::thread::sleep(Duration::from_millis(50)); // polling a child's exit
            };
            assert!(status.success(), "the final child run failed: {status}");
            reader.join().unwrap()
        }
    }
}

#[test]
fn kill_nine_at_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let seed = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5EED_u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    while kills < KILLS {
        let delay = Duration::from_millis(rng.random_range(5..150));
        let done = run_child(dir.path(), &acknowledged, Some(delay));
        if done {
            break;
        }
        kills += 1;
        let snapshot = read_store(dir.path());
        check_invariants(&snapshot, &acknowledged.lock().unwrap());
    }
    let before_final = read_store(dir.path());
    eprintln!(
        "after {kills} kills: {} instances finished, {} live, left for the final run",
        before_final.finished.len(),
        before_final.live.len()
    );
    assert!(
        run_child(dir.path(), &acknowledged, None),
        "the final run did not finish the workload"
    );
    let snapshot = read_store(dir.path());
    check_invariants(&snapshot, &acknowledged.lock().unwrap());
    assert!(snapshot.live.is_empty());
    let steps: u64 = snapshot.finished.iter().map(|record| record.visits).sum();
    eprintln!(
        "seed {seed}: {kills} kills, {} instances, {steps} committed steps",
        snapshot.finished.len()
    );
    assert!(
        kills >= 50,
        "only {kills} kills happened before the workload finished; raise the workload"
    );
    assert_eq!(snapshot.finished.len() as u64, TARGET_INSTANCES);
    assert!(steps >= 3_000, "only {steps} steps were committed");
    for record in &snapshot.finished {
        check_outcome(record);
    }
}
