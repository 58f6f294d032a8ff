//! Cron schedules from the config file: each fire time starts exactly one instance, also across
//! SIGKILLs of a real child process; fire times missed during downtime follow the schedule's
//! policy; editing the schedule takes effect live.
//!
//! The behaviours listed in `on_sled_and_postgres!` run on sled and on PostgreSQL. The SIGKILL
//! test here kills a process on the embedded store; on PostgreSQL, fires under SIGKILL of many
//! processes are checked by `tests/cluster_crash.rs`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rand::{Rng, SeedableRng};
use strata::instance::{InstanceRecord, ScheduledFire};
use strata::store::{SledStore, Store};
use strata::{Engine, Event, InstanceFilter};
use strata_store::Op;
use strata_workflows::ledger;

on_sled_and_postgres!(
    fires_missed_during_downtime_are_skipped_under_skip,
    fires_missed_during_downtime_start_the_newest_once_under_fire_once,
    fires_missed_during_downtime_each_start_once_up_to_max_missed_under_fire_each,
    a_schedule_fires_every_second_and_an_edit_takes_effect_live,
    a_schedule_for_an_unknown_workflow_or_with_a_bad_expression_is_refused,
    removing_a_schedule_from_the_file_stops_it,
);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn config(cron: &str, missed: &str, entries: u32) -> String {
    format!(
        "[[schedules]]\nname = \"postings\"\nworkflow = \"ledger\"\ncron = \"{cron}\"\n\
         input = {{ account = 7, entries = {entries} }}\nmissed = \"{missed}\"\nmax_missed = 5\n"
    )
}

/// Every record a schedule started, keyed by fire time.
fn scheduled(engine: &Engine) -> BTreeMap<u64, InstanceRecord> {
    engine
        .list(&InstanceFilter::workflow(ledger::WORKFLOW))
        .unwrap()
        .into_iter()
        .filter_map(|info| info.record.scheduled.clone().map(|fire| (fire.fire_ms, info.record)))
        .collect()
}

fn last_handled(engine: &Engine) -> Option<u64> {
    engine
        .schedule_fires()
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "postings")
        .map(|(_, at)| at)
}

/// Opens `backend`, whose schedule (every 5 minutes) last fired an hour ago, with `missed`
/// policy, and returns the fire times the engine started and the newest fire time due.
async fn after_an_hour_of_downtime(backend: &Backend, missed: &str) -> (Vec<u64>, u64) {
    // The schedule's last handled fire, as an engine that stopped an hour ago left it.
    let an_hour_ago = now_ms() - 3_600_000;
    {
        let store = backend.store();
        store
            .apply(&[Op::PutScheduleFire {
                schedule: "postings".into(),
                fire_ms: an_hour_ago,
            }])
            .unwrap();
        store.sync().unwrap();
    }
    let newest_due = now_ms() / 300_000 * 300_000;
    let engine = backend
        .builder()
        .register(ledger::v1_0())
        .schedule_grace(Duration::ZERO)
        .open()
        .await
        .unwrap();
    engine
        .apply_config("strata.toml", &config("*/5 * * * *", missed, 1))
        .await
        .unwrap();
    // The fire is stored in the start's commit; the instance is listed just after that commit.
    wait_until(&engine, |engine| {
        last_handled(engine) == Some(newest_due) && (missed == "skip" || scheduled(engine).contains_key(&newest_due))
    })
    .await;
    let fires: Vec<u64> = scheduled(&engine).into_keys().collect();
    engine.shutdown().await;
    (fires, newest_due)
}

async fn fires_missed_during_downtime_are_skipped_under_skip(backend: Backend) {
    let (fires, _) = after_an_hour_of_downtime(&backend, "skip").await;
    assert!(fires.is_empty(), "skip started {fires:?}");
}

async fn fires_missed_during_downtime_start_the_newest_once_under_fire_once(backend: Backend) {
    let (fires, newest) = after_an_hour_of_downtime(&backend, "fire_once").await;
    assert_eq!(fires, vec![newest]);
}

async fn fires_missed_during_downtime_each_start_once_up_to_max_missed_under_fire_each(backend: Backend) {
    let five_minutes = 300_000;
    let (fires, newest) = after_an_hour_of_downtime(&backend, "fire_each").await;
    let expected: Vec<u64> = (0..5).rev().map(|back| newest - back * five_minutes).collect();
    assert_eq!(fires, expected, "the latest max_missed = 5 fires, each once");
}

async fn a_schedule_fires_every_second_and_an_edit_takes_effect_live(backend: Backend) {
    let engine = backend.builder().register(ledger::v1_0()).open().await.unwrap();
    let mut events = engine.subscribe();
    engine
        .apply_config("strata.toml", &config("* * * * * *", "fire_each", 1))
        .await
        .unwrap();
    for _ in 0..2 {
        wait_for_event(&mut events, |event| matches!(event, Event::InstanceStarted { .. })).await;
    }
    engine
        .apply_config("strata.toml", &config("* * * * * *", "fire_each", 3))
        .await
        .unwrap();
    loop {
        let event = wait_for_event(&mut events, |event| matches!(event, Event::InstanceStarted { .. })).await;
        let Event::InstanceStarted { id, .. } = event else {
            unreachable!()
        };
        let input: ledger::LedgerState = engine.instance(id).unwrap().state().unwrap();
        if input.entries == 3 {
            break;
        }
    }
    let fires: Vec<u64> = scheduled(&engine).into_keys().collect();
    assert!(
        fires.windows(2).all(|pair| pair[1] - pair[0] == 1_000),
        "a fire was skipped or doubled: {fires:?}"
    );
    engine.shutdown().await;
}

async fn a_schedule_for_an_unknown_workflow_or_with_a_bad_expression_is_refused(backend: Backend) {
    let engine = backend.builder().register(ledger::v1_0()).open().await.unwrap();
    let cases = [
        (
            config("*/5 * * * *", "skip", 1).replace("\"ledger\"", "\"invoice\""),
            "schedules[0].workflow: no version of workflow 'invoice'",
        ),
        (
            config("*/5 * *", "skip", 1),
            "schedules[0].cron: '*/5 * *' has 3 field(s); expected the standard five",
        ),
        (config("* * * * *", "sometimes", 1), "unknown variant `sometimes`"),
    ];
    for (text, expected) in cases {
        let error = engine.apply_config("strata.toml", &text).await.unwrap_err().to_string();
        assert!(error.contains(expected), "'{error}' does not say '{expected}'");
    }
    engine.shutdown().await;
}

const CHILD_DIR: &str = "STRATA_SCHEDULE_CHILD_DIR";
const CHILD_RUN_MS: &str = "STRATA_SCHEDULE_CHILD_RUN_MS";

/// The child: runs an engine with an every-second schedule; killed by the parent, or stops by
/// itself after `STRATA_SCHEDULE_CHILD_RUN_MS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the child process of fires_survive_sigkill_without_loss_or_duplicates"]
async fn schedule_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let engine = builder(Path::new(&dir)).register(ledger::v1_0()).open().await.unwrap();
    // Applied once; later runs get it back from the store's config history.
    engine
        .apply_config("strata.toml", &config("* * * * * *", "fire_each", 1))
        .await
        .unwrap();
    println!("STRATA ready");
    let run_for = std::env::var(CHILD_RUN_MS)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(u64::MAX);
    tokio::time::sleep(Duration::from_millis(run_for.min(3_600_000))).await; // the child's lifetime
    engine.shutdown().await;
}

fn run_child(dir: &Path, kill_after: Option<Duration>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "schedule_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if kill_after.is_none() {
        command.env(CHILD_RUN_MS, "2500");
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the engine is open, so the kill lands while it runs.
    while let Some(Ok(line)) = lines.next() {
        if line.contains("STRATA ready") {
            break;
        }
    }
    match kill_after {
        Some(delay) => {
            std::thread::sleep(delay); // picks the kill moment; not a synchronisation
            let _ = child.kill();
            let _ = child.wait();
        }
        None => assert!(child.wait().unwrap().success()),
    }
}

#[test]
fn fires_survive_sigkill_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..12 {
        run_child(dir.path(), Some(Duration::from_millis(rng.random_range(100..1_300))));
    }
    run_child(dir.path(), None);
    let store = SledStore::open(dir.path()).unwrap();
    let mut records = store.recover(u64::MAX).unwrap().live;
    records.extend(
        store
            .finished_instances(&Default::default(), &mut |_| true, usize::MAX)
            .unwrap(),
    );
    let mut fires: Vec<u64> = records
        .iter()
        .filter_map(|record| record.scheduled.as_ref().map(|ScheduledFire { fire_ms, .. }| *fire_ms))
        .collect();
    let started = fires.len();
    fires.sort_unstable();
    fires.dedup();
    assert_eq!(fires.len(), started, "a fire time started two instances");
    assert!(fires.len() >= 8, "only {} fires happened", fires.len());
    assert!(
        fires.windows(2).all(|pair| pair[1] - pair[0] == 1_000),
        "a fire time between the first and the last was lost: {fires:?}"
    );
    let (_, last) = store
        .schedule_fires()
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "postings")
        .unwrap();
    assert_eq!(
        last,
        *fires.last().unwrap(),
        "the last handled fire is the last started one"
    );
    eprintln!(
        "{} fires over 13 runs, 12 of them killed, none lost or doubled",
        fires.len()
    );
}

async fn removing_a_schedule_from_the_file_stops_it(backend: Backend) {
    let engine = backend.builder().register(ledger::v1_0()).open().await.unwrap();
    let mut events = engine.subscribe();
    engine
        .apply_config("strata.toml", &config("* * * * * *", "fire_each", 1))
        .await
        .unwrap();
    wait_for_event(&mut events, |event| matches!(event, Event::InstanceStarted { .. })).await;
    engine.apply_config("strata.toml", "").await.unwrap();
    let removed_at = now_ms();
    // Absence can only be observed over time: two and a half fire periods. A fire due before the
    // removal may still be starting; none due after it may start.
    let fired_after_removal = tokio::time::timeout(Duration::from_millis(2_500), async {
        loop {
            if let Ok(Event::InstanceStarted { id, .. }) = events.recv().await {
                let fire = engine.instance(id).unwrap().record.scheduled.unwrap();
                if fire.fire_ms > removed_at {
                    return fire.fire_ms;
                }
            }
        }
    })
    .await;
    assert!(
        fired_after_removal.is_err(),
        "a removed schedule fired at {fired_after_removal:?}"
    );
    engine.shutdown().await;
}
