//! The command line: every command, its arguments and the global options, as clap types.

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

/// `--step FROM=TO` options as the step map a request body takes.
pub(crate) fn step_map(mappings: &[String]) -> Result<std::collections::HashMap<String, String>, CliError> {
    let mut steps = std::collections::HashMap::new();
    for mapping in mappings {
        let (from, to) = mapping
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--step '{mapping}': write FROM=TO")))?;
        steps.insert(from.to_string(), to.to_string());
    }
    Ok(steps)
}

/// Watch and steer a Strata engine through its admin API.
///
/// Exit codes: 0 done (or the condition asked about holds), 1 the condition does not hold
/// (`versions --drained` on a version still draining, `config check` on an invalid file), 2 the
/// command line is wrong, 3 the engine refused the request (it says why), 4 the admin API could
/// not be reached or failed.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The admin API's address.
    #[arg(
        long,
        env = "STRATA_ADMIN_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub url: String,
    /// The bearer token (the admin token to change anything, the read-only one to look).
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// The versions of every workflow (or one) with their residency: status, live and finished
    /// counts, oldest live instance, the workers that can run them, and whether their code can go.
    Versions(VersionsArgs),
    /// Instances: list them (filtered, paged) or show one.
    #[command(subcommand)]
    Instances(InstancesCommand),
    /// Starts an instance, routed like any start (or on a version meeting `--version`).
    Start {
        /// The workflow.
        workflow: String,
        /// Its input as JSON (default `null`).
        input: Option<String>,
        /// The key sticky routing hashes (a customer id, say).
        #[arg(long)]
        key: Option<String>,
        /// A semver requirement the version must meet (`=1.0.0` for an exact one).
        #[arg(long)]
        version: Option<String>,
    },
    /// Sends a signal to an instance, wherever it runs.
    Signal {
        /// The instance id.
        id: u64,
        /// The signal's name.
        name: String,
        /// Its payload as JSON (default `null`).
        payload: Option<String>,
    },
    /// Cancels a live instance at its next step boundary (a running step finishes first).
    Cancel {
        /// The instance id.
        id: u64,
    },
    /// Ends a live instance at once, without running another step: a running step is abandoned.
    /// It ends cancelled, and its history keeps the reason.
    Terminate {
        /// The instance id.
        id: u64,
        /// Why (required): kept in the instance's history.
        #[arg(long)]
        reason: String,
    },
    /// Stops routing new instances to a version; it drains as its instances finish.
    Drain {
        /// The workflow.
        workflow: String,
        /// The version.
        version: String,
    },
    /// Undoes a drain: a draining or drained version takes new instances again (refused for a
    /// retired version and one whose code no live worker has).
    Activate {
        /// The workflow.
        workflow: String,
        /// The version.
        version: String,
    },
    /// Retires a version with no live instance (refused, by count, while any lives).
    Retire {
        /// The workflow.
        workflow: String,
        /// The version.
        version: String,
    },
    /// Rollouts: status, start, pause, resume, roll back.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// The config in force, its history with diffs, restoring a generation, checking a file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Moving instances to another version, and background state migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// The engine's events as they happen (instances started and finished, versions drained,
    /// rollouts advancing or rolled back, configs applied, ...), one per line.
    Events {
        /// Keep reading until interrupted (the default; kept for the familiar spelling).
        #[arg(long, short)]
        follow: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Only events about this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only events about this version.
        #[arg(long)]
        version: Option<String>,
        /// Only events of this type (repeat: `--kind instance_finished --kind version_drained`).
        #[arg(long = "kind")]
        kinds: Vec<String>,
    },
    /// The workers sharing the engine's store: host, process, heartbeat, the versions each
    /// runs, whether its lease is current.
    Workers,
    /// The routing rules that route new instances now (after promotions and rollbacks), and how
    /// many starts each version got and why since the engine opened.
    Routing {
        /// Only this workflow.
        workflow: Option<String>,
    },
    /// The schedules of the config in force, with their last and next fires.
    Schedules,
    /// Prints a shell completion script (`strata completions bash > /etc/bash_completion.d/strata`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `strata versions`.
#[derive(Args, Debug)]
pub(crate) struct VersionsArgs {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this version (with the workflow).
    pub version: Option<String>,
    /// Exit 0 only if the version given is drained and its code is safe to remove (1 if not),
    /// so a deploy pipeline can wait on it.
    #[arg(long, requires = "version")]
    pub drained: bool,
    /// With `--drained`: wait until it is, checking twice a second.
    #[arg(long, requires = "drained")]
    pub wait: bool,
    /// With `--wait`: give up (exit 1) after this many seconds.
    #[arg(long, requires = "wait")]
    pub timeout: Option<u64>,
}

/// `strata instances ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum InstancesCommand {
    /// Lists instances, oldest first, a page at a time.
    List {
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this version (with `--workflow`).
        #[arg(long)]
        version: Option<String>,
        /// Only this status: ready, running, sleeping, waiting_signal, retry_backoff, parked,
        /// quarantined, completed, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// At most this many per page.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Only ids past this one in the listing's order (the `next` of the previous page).
        #[arg(long)]
        after: Option<u64>,
        /// The newest instances first.
        #[arg(long)]
        newest: bool,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// One instance: version, status, step, timers, state and output as JSON.
    Show {
        /// The instance id.
        id: u64,
    },
    /// What happened to one instance: its start, each step attempt (what woke it, how long it
    /// took, how it ended, its error), cancels, migrations and moves, with times since its start.
    History {
        /// The instance id.
        id: u64,
        /// Only its newest this many entries.
        #[arg(long)]
        last: Option<usize>,
        /// Then print each new entry as it comes, until the instance has finished.
        #[arg(long)]
        follow: bool,
    },
    /// Revives failed and cancelled instances: live again on the version they ended on, or
    /// `--on` one that fixes their bug, at the step they ended on (or `--step FROM=TO`), their
    /// state migrated along the chain. `--dry-run` first: which would be taken up where, and why
    /// the others would not.
    Revive(ReviveArgs),
    /// Live records set apart because they do not decode, with why (the rest run).
    Quarantined,
}

/// Which ended instances a revival takes, and where.
#[derive(Args, Debug)]
pub(crate) struct ReviveArgs {
    /// The workflow.
    pub workflow: String,
    /// Revive them on this version (a fix) instead of the one each ended on.
    #[arg(long = "on")]
    pub target: Option<String>,
    /// Only instances that ended on this version.
    #[arg(long)]
    pub from: Option<String>,
    /// Only instances that ended so: failed or cancelled (default: either).
    #[arg(long)]
    pub status: Option<String>,
    /// Only failed instances whose failure reason contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only instances that ended since then: a time ago (`90s`, `30m`, `2h`, `1d`) or ms since
    /// the Unix epoch.
    #[arg(long)]
    pub since: Option<String>,
    /// Only instances that ended before then: a time ago or ms since the Unix epoch.
    #[arg(long)]
    pub until: Option<String>,
    /// Only these instances (repeat).
    #[arg(long = "id")]
    pub ids: Vec<u64>,
    /// Take instances that ended on step FROM up at step TO (repeat).
    #[arg(long = "step")]
    pub steps: Vec<String>,
    /// Instances per commit.
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Say what would be revived, and why not; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a rollback does to the candidate's in-flight instances.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub(crate) enum OnRollback {
    /// They finish on the candidate.
    KeepRunning,
    /// They move back to the stable version where a move plan allows.
    MoveBack,
}

impl OnRollback {
    /// The choice as the API takes it.
    pub(crate) fn choice(self) -> strata_admin_model::OnRollbackChoice {
        match self {
            OnRollback::KeepRunning => strata_admin_model::OnRollbackChoice::KeepRunning,
            OnRollback::MoveBack => strata_admin_model::OnRollbackChoice::MoveBack,
        }
    }
}

/// `strata rollout ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCommand {
    /// Every rollout (or one): stage, the candidate's share, gate figures against the stable.
    Status {
        /// The rollout's name (`workflow@candidate`).
        name: Option<String>,
        /// Only this workflow's.
        #[arg(long)]
        workflow: Option<String>,
        /// With a name: print it again whenever it changes, until it is promoted (exit 0) or
        /// rolled back (exit 1).
        #[arg(long, requires = "name")]
        watch: bool,
    },
    /// Starts a watched rollout at its first stage.
    Start {
        /// The workflow.
        #[arg(long)]
        workflow: String,
        /// The version rolled out.
        #[arg(long)]
        candidate: String,
        /// The version it is compared with, and rolled back to.
        #[arg(long)]
        stable: String,
        /// A stage as `PERCENT[:HOLD_SECONDS[:MIN_FINISHED]]`, e.g. `5:600:100`; repeat in order.
        /// `shadow:10:600:50` is a shadow stage (10 % of the stable's starts also run the
        /// candidate, unseen; 50 shadow instances must finish); shadow stages come first.
        #[arg(long = "stage", required = true)]
        stages: Vec<String>,
        /// The gates as JSON, e.g. `{"max_error_rate_increase": 0.02}`; at least one unless
        /// `--unwatched`. Fields: max_error_rate_increase, max_latency_multiplier,
        /// min_success_rate, max_consecutive_failures, and measures: gates on measures the
        /// versions declare, e.g. `{"measures": [{"measure": "quality", "min": 0.85,
        /// "min_sample": 30}, {"measure": "cost_usd", "max_increase": 0.2}]}`.
        #[arg(long)]
        gates: Option<String>,
        /// Its name (default `workflow@candidate`, or `workflow@candidate~N` when an earlier
        /// rollout of the candidate ended).
        #[arg(long)]
        name: Option<String>,
        /// What a rollback does to the candidate's in-flight instances.
        #[arg(long, value_enum, default_value_t = OnRollback::KeepRunning)]
        on_rollback: OnRollback,
        /// Runs it with no gate at all, on purpose (watches nothing).
        #[arg(long, conflicts_with = "gates")]
        unwatched: bool,
    },
    /// Holds a rollout at its stage.
    Pause {
        /// The rollout's name.
        name: String,
    },
    /// Lets a paused rollout go on.
    Resume {
        /// The rollout's name.
        name: String,
    },
    /// Rolls a rollout back to its stable version now.
    Rollback {
        /// The rollout's name.
        name: String,
    },
    /// The shadow pairs of a rollout's shadow stages: each real instance of the stable version
    /// beside the candidate's shadow of it, compared; mismatches first, with what differs.
    Shadows {
        /// The rollout's name.
        name: String,
        /// Only the pairs that differ.
        #[arg(long)]
        mismatches: bool,
    },
}

/// `strata config ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// The config generation in force, with its text.
    Show,
    /// Every applied generation, oldest first.
    History,
    /// What a generation changed from the one before it.
    Diff {
        /// The generation.
        generation: u64,
    },
    /// Applies an earlier generation again, as the newest.
    Restore {
        /// The generation.
        generation: u64,
    },
    /// Checks a config file: syntax and structure here, then against the running engine's
    /// versions (not applied). Exit 0 valid, 1 invalid.
    Check {
        /// The file.
        file: std::path::PathBuf,
        /// Only syntax and structure; do not ask the engine.
        #[arg(long)]
        offline: bool,
    },
}

/// Which instances a move takes.
#[derive(Args, Debug)]
pub(crate) struct MoveArgs {
    /// The workflow.
    #[arg(long)]
    pub workflow: String,
    /// The version they move to.
    #[arg(long)]
    pub target: String,
    /// Only instances on this version.
    #[arg(long)]
    pub from: Option<String>,
    /// Only instances with this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only these instances (repeat).
    #[arg(long = "id")]
    pub ids: Vec<u64>,
    /// Where instances at a step without a counterpart continue, as `FROM=TO` (repeat).
    #[arg(long = "step")]
    pub steps: Vec<String>,
}

/// `strata migrate ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Which instances a move would take and where each continues, or why it cannot move;
    /// nothing changes.
    Plan(MoveArgs),
    /// Moves the instances at their next step boundary.
    Apply(MoveArgs),
    /// Starts a background migration of a workflow's states to the schema their versions expect.
    Start {
        /// The workflow.
        workflow: String,
        /// Records per batch (one commit each).
        #[arg(long)]
        batch_size: Option<usize>,
        /// At most this many records per second.
        #[arg(long)]
        max_per_second: Option<u32>,
        /// Wait for it to finish, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// A background migration's progress.
    Status {
        /// The workflow.
        workflow: String,
        /// Wait for it to finish, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Pauses a background migration after its batch in flight.
    Pause {
        /// The workflow.
        workflow: String,
    },
    /// Resumes a paused background migration.
    Resume {
        /// The workflow.
        workflow: String,
    },
}
