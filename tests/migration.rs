//! State migration (invariant 6) and moves between versions (invariant 1's recorded upgrade):
//! lazy migration in the step's commit, background migration with pause, resume and restart,
//! failing migrations, plans with reasons, moves with exact counters, AutoUpgrade, reverse moves.
//!
//! Every behaviour here runs on sled and on PostgreSQL.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::tally::{self, TallyV1, TallyV2};
use common::*;
use strata::instance::RECORD_FORMAT;
use strata::migrate::{MigrationError, MigrationJobRecord, MigrationState, MoveRefusal};
use strata::{
    Engine, EngineError, Event, InstanceFilter, InstanceId, InstanceStatus, MigrationJob, MoveRequest, StartOptions,
    StateMigration, Version,
};
use strata_store::Op;
use strata_workflows::order::{self, OrderOutput, OrderState, OrderStateV2, OrderStateV3};

on_sled_and_postgres!(
    a_plan_says_which_instances_can_move_and_applying_it_keeps_counters_exact,
    instances_move_forward_through_a_renamed_step_and_back_through_an_inverse,
    a_step_migrates_old_state_lazily_and_stores_it_in_its_own_commit,
    background_migration_pauses_survives_a_restart_and_migrates_each_record_once,
    a_job_stored_before_jobs_had_shares_resumes_where_it_stopped_with_its_counts,
    a_failing_or_panicking_migration_leaves_only_that_record_behind,
    migrations_that_skip_a_schema_or_leave_a_hole_are_refused_at_open,
    an_instance_mid_step_is_never_moved,
    auto_upgrade_moves_instances_to_the_routing_target_or_records_why_not,
);

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

/// Live count the registry reports for `version` of `workflow`, and the live instances listed on it.
fn live_counts(engine: &Engine, workflow: &str, version: &str) -> (u64, usize) {
    let counted = engine.version(workflow, version).unwrap().counters.live;
    let listed = engine
        .list(&InstanceFilter::workflow(workflow).with_version(v(version)))
        .unwrap()
        .iter()
        .filter(|info| !info.status.is_terminal())
        .count();
    (counted, listed)
}

async fn a_step_migrates_old_state_lazily_and_stores_it_in_its_own_commit(backend: Backend) {
    let ids = tally::stored_on_schema_1(&backend, [5, 7]).await;

    // The next deploy of 1.0.0 reads schema 2; stored states are still schema 1.
    let calls = Arc::new(AtomicU64::new(0));
    let engine = tally::open_on_schema_2(&backend, calls.clone()).await;
    let before = engine.instance(ids[0]).unwrap();
    assert_eq!(before.state_schema(), 1, "opening migrates nothing by itself");
    assert_eq!(before.state::<TallyV1>().unwrap(), TallyV1 { count: 5, stamps: 0 });
    let applies_before = engine.store_stats().applies;
    engine.signal(ids[0], tally::GO, &()).await.unwrap();
    let output: u64 = outcome_within(&engine, ids[0]).await.output().unwrap();
    assert_eq!(output, 15, "the schema-2 step saw the migrated state (5 + doubled 10)");
    let after = engine.instance(ids[0]).unwrap();
    assert_eq!(after.state_schema(), 2);
    assert_eq!(
        after.state::<TallyV2>().unwrap(),
        TallyV2 {
            count: 5,
            doubled: 10,
            stamps: 1
        }
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "migrated once, for the step that loaded it"
    );
    // The signal's commit and the step's commit; no separate commit for the migration.
    assert!(engine.store_stats().applies - applies_before <= 2);
    // The other instance was not loaded for a step: still schema 1, still readable.
    assert_eq!(engine.instance(ids[1]).unwrap().state_schema(), 1);
    engine.shutdown().await;
}

async fn background_migration_pauses_survives_a_restart_and_migrates_each_record_once(backend: Backend) {
    // Counts clear of the ones the tally migration refuses (13, 666) or holds (999).
    let ids = tally::stored_on_schema_1(&backend, 1_000..1_600).await;

    let calls = Arc::new(AtomicU64::new(0));
    let open = |calls: Arc<AtomicU64>| {
        backend
            .builder()
            .register(tally::on_schema_2("1.0.0"))
            .migration(tally::migration(calls))
            .open()
    };
    let engine = open(calls.clone()).await.unwrap();
    let mut events = engine.subscribe();
    // Rate-limited to 50 records per 25 ms, so the pause lands while the job has work left.
    let job = engine
        .migrate_states(MigrationJob::new(tally::WORKFLOW).batch_size(50).max_per_second(2_000))
        .unwrap();
    let first = wait_for_event(&mut events, |event| matches!(event, Event::MigrationProgress { .. })).await;
    job.pause();
    wait_until(&engine, |_| job.progress().state == MigrationState::Paused).await;
    let paused = job.progress();
    assert!(
        paused.migrated >= 50 && paused.remaining > 0,
        "{paused:?} after {first:?}"
    );
    engine.shutdown().await;

    // Reopened: the job is back, still paused, with its counts.
    let engine = open(calls.clone()).await.unwrap();
    let job = engine
        .migration(tally::WORKFLOW)
        .expect("the unfinished job resumed at open");
    assert_eq!(job.progress().state, MigrationState::Paused);
    assert_eq!(job.progress().migrated, paused.migrated);
    let migrated_states = ids
        .iter()
        .filter(|id| engine.instance(**id).unwrap().state_schema() == 2)
        .count() as u64;
    assert_eq!(
        migrated_states, paused.migrated,
        "the stored count is the records migrated"
    );
    let mut events = engine.subscribe();
    job.resume();
    let done = job.finished_within(std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, MigrationState::Finished);
    assert_eq!(done.migrated, 600);
    assert_eq!(done.remaining, 0);
    assert_eq!(done.failed, 0);
    let mut last_migrated = 0;
    loop {
        match wait_for_event(&mut events, |event| {
            matches!(event, Event::MigrationProgress { .. } | Event::MigrationFinished { .. })
        })
        .await
        {
            Event::MigrationProgress { migrated, .. } => {
                assert!(migrated > last_migrated, "progress goes forward");
                last_migrated = migrated;
            }
            Event::MigrationFinished { migrated, .. } => {
                assert_eq!(migrated, 600);
                break;
            }
            _ => unreachable!(),
        }
    }
    for id in &ids {
        let info = engine.instance(*id).unwrap();
        assert_eq!(info.state_schema(), 2);
        assert_eq!(
            info.state::<TallyV2>().unwrap().stamps,
            1,
            "instance {id} migrated once"
        );
    }
    assert_eq!(calls.load(Ordering::Relaxed), 600, "one call per record over both runs");
    // Migrated instances run on: each completes with count + doubled.
    engine.signal(ids[9], tally::GO, &()).await.unwrap();
    assert_eq!(
        outcome_within(&engine, ids[9]).await.output::<u64>().unwrap(),
        1_009 * 3
    );
    engine.shutdown().await;
    let mut announced_again = 0;
    while let Ok(event) = events.try_recv() {
        announced_again += usize::from(matches!(event, Event::MigrationFinished { .. }));
    }
    assert_eq!(announced_again, 0, "the end of the job is announced once");
    let stored = backend.store().migration_jobs().unwrap();
    let job_records: Vec<_> = stored.iter().filter(|record| record.worker.is_empty()).collect();
    assert_eq!(job_records.len(), 1, "{stored:?}");
    assert_eq!(
        (job_records[0].state, job_records[0].migrated),
        (MigrationState::Finished, 600),
        "the job's own record keeps its totals"
    );
}

async fn a_job_stored_before_jobs_had_shares_resumes_where_it_stopped_with_its_counts(backend: Backend) {
    let ids = tally::stored_on_schema_1(&backend, 1..=10).await;
    // An earlier Strata walked a job as one, on the job's own record: four records done, paused.
    let legacy = MigrationJobRecord {
        format: RECORD_FORMAT,
        workflow: tally::WORKFLOW.to_string(),
        job: MigrationJob::new(tally::WORKFLOW).batch_size(3),
        cursor: Some(ids[3]),
        state: MigrationState::Paused,
        migrated: 4,
        failed: 0,
        started_at_ms: 1,
        worker: String::new(),
        control: 0,
        remaining: 6,
        claims_covered: 0,
    };
    backend.store().apply(&[Op::PutMigrationJob(legacy)]).unwrap();

    let calls = Arc::new(AtomicU64::new(0));
    let engine = tally::open_on_schema_2(&backend, calls.clone()).await;
    let job = engine
        .migration(tally::WORKFLOW)
        .expect("the stored job is followed at open");
    let progress = job.progress();
    assert_eq!((progress.state, progress.migrated), (MigrationState::Paused, 4));
    job.resume();
    let done = job.finished_within(std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        (done.state, done.migrated, done.failed),
        (MigrationState::Finished, 10, 0)
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        6,
        "only the records after its cursor were walked"
    );
    let schemas: Vec<u32> = ids
        .iter()
        .map(|id| engine.instance(*id).unwrap().state_schema())
        .collect();
    assert_eq!(schemas, [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    engine.shutdown().await;
}

async fn a_failing_or_panicking_migration_leaves_only_that_record_behind(backend: Backend) {
    let counts = [1, tally::FAILS_TO_MIGRATE, 2, tally::PANICS_IN_MIGRATION, 3];
    let ids = tally::stored_on_schema_1(&backend, counts).await;

    let engine = tally::open_on_schema_2(&backend, Arc::new(AtomicU64::new(0))).await;
    let job = engine
        .migrate_states(MigrationJob::new(tally::WORKFLOW).batch_size(2))
        .unwrap();
    let done = job.finished_within(std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!((done.migrated, done.failed), (3, 2));
    let failed: Vec<InstanceId> = done.failures.iter().map(|failure| failure.id).collect();
    assert_eq!(failed, vec![ids[1], ids[3]]);
    assert!(
        done.failures[0].reason.contains("count 13 is refused"),
        "{:?}",
        done.failures
    );
    assert!(done.failures[1].reason.contains("panicked"), "{:?}", done.failures);
    for (id, count) in ids.iter().zip(counts) {
        let info = engine.instance(*id).unwrap();
        let failing = count == tally::FAILS_TO_MIGRATE || count == tally::PANICS_IN_MIGRATION;
        assert_eq!(info.state_schema(), if failing { 1 } else { 2 });
    }
    // When a failing record is loaded for a step it is quarantined with the reason; the others run.
    for id in &ids {
        engine.signal(*id, tally::GO, &()).await.unwrap();
    }
    for (id, count) in ids.iter().zip(counts) {
        if count == tally::FAILS_TO_MIGRATE || count == tally::PANICS_IN_MIGRATION {
            wait_for_status(&engine, *id, InstanceStatus::Quarantined).await;
            let info = engine.instance(*id).unwrap();
            let reason = format!("{:?}", info.record.phase);
            assert!(reason.contains("cannot be migrated"), "{reason}");
        } else {
            assert_eq!(outcome_within(&engine, *id).await.output::<u64>().unwrap(), count * 3);
        }
    }
    engine.shutdown().await;
    let after = job.progress();
    assert_eq!(
        (after.migrated, after.failed, after.failures.len()),
        (3, 2, 2),
        "a record that failed is not tried and counted again once the job has finished"
    );
}

async fn migrations_that_skip_a_schema_or_leave_a_hole_are_refused_at_open(backend: Backend) {
    let skip = StateMigration::new("tally", 1, 3, |state: TallyV1| Ok(state));
    let error = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .migration(skip)
        .open()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, EngineError::Migration(MigrationError::SkipsSchema { .. })),
        "{error}"
    );
    let hole = StateMigration::new("tally", 3, 4, |state: TallyV1| Ok(state));
    let error = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .migration(hole)
        .open()
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("none from 2 to 3"), "{error}");
    let twice = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .migration(tally::migration(Arc::new(AtomicU64::new(0))))
        .open()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(twice, EngineError::Migration(MigrationError::Duplicate { from: 1, .. })),
        "{twice}"
    );
}

/// An engine with order 1.1.0, 2.0.0 and 3.0.0, their migrations and step mappings.
async fn order_engine(backend: &Backend) -> Engine {
    let mut builder = backend
        .builder()
        .register(order::v1_1())
        .register(order::v2_0())
        .register(order::v3_0());
    for migration in order::migrations() {
        builder = builder.migration(migration);
    }
    for mapping in order::step_mappings() {
        builder = builder.step_mapping(mapping);
    }
    builder.open().await.unwrap()
}

async fn a_plan_says_which_instances_can_move_and_applying_it_keeps_counters_exact(backend: Backend) {
    let engine = order_engine(&backend).await;
    let on_1_1 = || StartOptions::new().version("=1.1.0");
    let mut waiting = Vec::new();
    for n in 0..6 {
        let input = small_order(n).with_address(format!("{n} Quay Street, 7500{n} Paris"));
        let id = engine.start_with(order::WORKFLOW, &input, on_1_1()).await.unwrap();
        waiting.push((id, input));
    }
    let bad_input = small_order(50).with_address("no commas here");
    let bad = engine.start_with(order::WORKFLOW, &bad_input, on_1_1()).await.unwrap();
    for (id, _) in &waiting {
        wait_for_status(&engine, *id, InstanceStatus::WaitingSignal).await;
    }
    wait_for_status(&engine, bad, InstanceStatus::WaitingSignal).await;

    // At step `charge`, which 2.0.0 does not have: every instance is refused, with the reason.
    let request = MoveRequest::new(order::WORKFLOW, v("2.0.0")).from_version(v("1.1.0"));
    let plan = engine.plan_moves(&request).unwrap();
    assert_eq!(plan.checks.len(), 7);
    for check in &plan.checks {
        assert_eq!(
            check.verdict,
            Err(MoveRefusal::NoCounterpartStep {
                step: "charge".into(),
                mapped: "charge".into()
            })
        );
    }
    // Mapped onto 2.0.0's payment step, all can move but the one whose address will not split:
    // the dry run runs the migrations too.
    let request = request.map_step("charge", "collect_payment").batch_size(3);
    let plan = engine.plan_moves(&request).unwrap();
    assert_eq!(plan.movable().count(), 6);
    let refused: Vec<_> = plan.refused().collect();
    assert_eq!(refused[0].id, bad);
    assert!(matches!(refused[0].verdict, Err(MoveRefusal::MigrationFailed(_))));
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.moved.len(), 6);
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].id, bad);
    let reason = report.refused[0].verdict.as_ref().unwrap_err().to_string();
    assert!(reason.contains("no comma between street and town"), "{reason}");

    assert_eq!(live_counts(&engine, order::WORKFLOW, "1.1.0"), (1, 1));
    assert_eq!(live_counts(&engine, order::WORKFLOW, "2.0.0"), (6, 6));
    let counters = engine.version(order::WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!((counters.moved_in, counters.started), (6, 0));
    assert_eq!(engine.version(order::WORKFLOW, "1.1.0").unwrap().counters.moved_out, 6);

    let info = engine.instance(waiting[2].0).unwrap();
    assert_eq!(info.version(), &v("2.0.0"));
    assert_eq!(info.step(), "collect_payment");
    assert_eq!(info.record.moves.len(), 1);
    let state: OrderStateV2 = info.state().unwrap();
    assert_eq!(state.ship_to.town, "Paris");
    assert_eq!(state.ship_to.postcode, "75002");

    for (id, input) in &waiting {
        engine
            .signal(*id, order::PAYMENT_SIGNAL, &full_payment(input))
            .await
            .unwrap();
    }
    for (id, _) in &waiting {
        let output: OrderOutput = outcome_within(&engine, *id).await.output().unwrap();
        assert_eq!(output.finished_on, "2.0.0");
        let state: OrderStateV2 = engine.instance(*id).unwrap().state().unwrap();
        let history = &state.order.history;
        assert_eq!(history[..2], ["validate@1.1.0", "reserve@1.1.0"]);
        assert_eq!(
            history[2..],
            [
                "collect_payment@2.0.0",
                "fraud_check@2.0.0",
                "reserve@2.0.0",
                "ship@2.0.0"
            ]
        );
    }
    let drained = engine.version(order::WORKFLOW, "2.0.0").unwrap().counters;
    assert_eq!((drained.live, drained.completed), (0, 6));
    engine.shutdown().await;
}

async fn instances_move_forward_through_a_renamed_step_and_back_through_an_inverse(backend: Backend) {
    let engine = order_engine(&backend).await;
    let on = |requirement: &str| StartOptions::new().version(requirement);
    let input = small_order(1).with_address("1 Rue Haute, 1000 Bruxelles");
    let forward = engine.start_with(order::WORKFLOW, &input, on("=2.0.0")).await.unwrap();
    let back = engine.start_with(order::WORKFLOW, &input, on("=2.0.0")).await.unwrap();
    let stuck = engine.start_with(order::WORKFLOW, &input, on("=3.0.0")).await.unwrap();
    for id in [forward, back, stuck] {
        wait_for_status(&engine, id, InstanceStatus::WaitingSignal).await;
    }

    // 2.0.0 → 3.0.0: the registered mapping renames the step; the state gains loyalty points.
    let report = engine
        .move_instances(&MoveRequest::new(order::WORKFLOW, v("3.0.0")).ids([forward]))
        .await
        .unwrap();
    assert_eq!(report.moved, vec![forward]);
    let info = engine.instance(forward).unwrap();
    assert_eq!(info.step(), "capture_payment");
    let state: OrderStateV3 = info.state().unwrap();
    assert_eq!(state.loyalty_points, input.total_cents() / 100);

    // 2.0.0 → 1.1.0: through the inverse of 1 → 2; the address is one line again.
    let request = MoveRequest::new(order::WORKFLOW, v("1.1.0"))
        .ids([back])
        .map_step("collect_payment", "charge");
    assert_eq!(
        engine.plan_moves(&request).unwrap().checks[0].verdict,
        Ok("charge".into())
    );
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.moved, vec![back]);
    let state: OrderState = engine.instance(back).unwrap().state().unwrap();
    assert_eq!(state.input.address, "1 Rue Haute, 1000 Bruxelles");

    // 3.0.0 → 2.0.0 has no inverse for 2 → 3: refused with that reason, left where it was.
    let plan = engine
        .plan_moves(&MoveRequest::new(order::WORKFLOW, v("2.0.0")).ids([stuck]))
        .unwrap();
    let refusal = plan.checks[0].verdict.clone().unwrap_err();
    assert!(refusal.to_string().contains("has no inverse"), "{refusal}");

    for id in [forward, back, stuck] {
        engine
            .signal(id, order::PAYMENT_SIGNAL, &full_payment(&input))
            .await
            .unwrap();
    }
    let finished_on = |id| {
        let engine = engine.clone();
        async move {
            let output: OrderOutput = outcome_within(&engine, id).await.output().unwrap();
            output.finished_on
        }
    };
    assert_eq!(finished_on(forward).await, "3.0.0");
    assert_eq!(finished_on(back).await, "1.1.0");
    assert_eq!(finished_on(stuck).await, "3.0.0");
    let state: OrderState = engine.instance(back).unwrap().state().unwrap();
    assert_eq!(state.shipped_to.as_deref(), Some("1 Rue Haute, 1000 Bruxelles"));
    for version in ["1.1.0", "2.0.0", "3.0.0"] {
        assert_eq!(live_counts(&engine, order::WORKFLOW, version), (0, 0));
    }
    engine.shutdown().await;
}

async fn an_instance_mid_step_is_never_moved(backend: Backend) {
    let calls = Arc::new(AtomicU64::new(0));
    let engine = backend
        .builder()
        .register(tally::on_schema_1("1.0.0"))
        .register(tally::on_schema_2("2.0.0"))
        .migration(tally::migration(calls.clone()))
        .open()
        .await
        .unwrap();
    let options = StartOptions::new().version("=1.0.0");
    let held = engine.start_with(tally::WORKFLOW, &tally::HELD, options).await.unwrap();
    wait_for_status(&engine, held, InstanceStatus::Running).await;
    let request = MoveRequest::new(tally::WORKFLOW, v("2.0.0")).ids([held]);
    assert_eq!(
        engine.plan_moves(&request).unwrap().checks[0].verdict,
        Err(MoveRefusal::MidStep)
    );
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.refused[0].verdict, Err(MoveRefusal::MidStep));
    assert_eq!(engine.instance(held).unwrap().version(), &v("1.0.0"));
    tally::HOLD_GATE.add_permits(1);
    wait_for_status(&engine, held, InstanceStatus::WaitingSignal).await;
    // At its next step boundary it can move.
    let report = engine.move_instances(&request).await.unwrap();
    assert_eq!(report.moved, vec![held]);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "applying a move migrates each state once"
    );
    engine.signal(held, tally::GO, &()).await.unwrap();
    assert_eq!(
        outcome_within(&engine, held).await.output::<u64>().unwrap(),
        tally::HELD * 3
    );
    engine.shutdown().await;
}

async fn auto_upgrade_moves_instances_to_the_routing_target_or_records_why_not(backend: Backend) {
    let calls = Arc::new(AtomicU64::new(0));
    let engine = backend
        .builder()
        .register(tally::auto_upgrading("1.0.0"))
        .migration(tally::migration(calls.clone()))
        .open()
        .await
        .unwrap();
    let ids = tally::start_waiting(&engine, [4, 5], StartOptions::new()).await;
    // 2.0.0 becomes the routing target (newest active); a pinned copy of 1.0.0 would stay.
    engine.register(tally::on_schema_2("2.0.0")).unwrap();
    let mut events = engine.subscribe();
    engine.signal(ids[0], tally::GO, &()).await.unwrap();
    assert_eq!(outcome_within(&engine, ids[0]).await.output::<u64>().unwrap(), 12);
    let moved = wait_for_event(&mut events, |event| matches!(event, Event::InstancesMoved { .. })).await;
    assert!(
        matches!(&moved, Event::InstancesMoved { from, to, count: 1, cause: strata::instance::MoveCause::AutoUpgrade }
            if from.version == v("1.0.0") && to.version == v("2.0.0")),
        "{moved:?}"
    );
    let info = engine.instance(ids[0]).unwrap();
    assert_eq!(info.version(), &v("2.0.0"));
    assert_eq!(info.record.moves[0].from_step, "finish");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(live_counts(&engine, tally::WORKFLOW, "1.0.0"), (1, 1));
    assert_eq!(live_counts(&engine, tally::WORKFLOW, "2.0.0"), (0, 0));

    // A target without the instance's step: it stays, runs on its version, and says why.
    let no_finish = strata::WorkflowVersion::<u64, TallyV2, u64>::new(tally::WORKFLOW, "3.0.0")
        .state_schema(2)
        .init(|count| TallyV2 {
            count,
            doubled: 0,
            stamps: 0,
        })
        .step("start", |_ctx, _state: &mut TallyV2| async {
            Ok(strata::Next::complete(0))
        });
    engine.register(no_finish).unwrap();
    engine.signal(ids[1], tally::GO, &()).await.unwrap();
    assert_eq!(outcome_within(&engine, ids[1]).await.output::<u64>().unwrap(), 5);
    let info = engine.instance(ids[1]).unwrap();
    assert_eq!(info.version(), &v("1.0.0"));
    let reason = info.record.pinned_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cannot move to tally@3.0.0") && reason.contains("'finish'"),
        "{reason}"
    );
    engine.shutdown().await;
}
