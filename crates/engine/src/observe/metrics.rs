//! Per-version metrics: exact totals and sliding windows of counts and latency histograms, cheap
//! enough to record on every step — atomics only, no lock; each version's metrics are reached
//! through the registry lookup the step path makes anyway.
//!
//! A window is a ring of [`WINDOW_BUCKETS`] time buckets of [`BUCKET_MS`] each on the engine's
//! clock. A bucket is reused when time comes round to it again; increments racing with that reuse
//! may land in the old or the new period (windows are statistics; the totals are exact).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use strata_core::instance::InstanceStatus;
use strata_core::measure::{add_totals, MeasureTotals};

/// The length of one window bucket, in ms of the engine's clock.
pub const BUCKET_MS: u64 = 10_000;
/// How many buckets a window ring holds: windows reach back `BUCKET_MS * WINDOW_BUCKETS`.
pub const WINDOW_BUCKETS: usize = 32;
/// Values below 2^`MAX_POWER` fit the histogram; larger ones count in its last bucket.
const MAX_POWER: usize = 40;
const SUB_BUCKETS: usize = 4;
const HISTOGRAM_BUCKETS: usize = SUB_BUCKETS + (MAX_POWER - 2) * SUB_BUCKETS;

/// A log-linear histogram: four buckets per power of two (at most 19 % relative error).
struct Histogram {
    counts: Box<[AtomicU64]>,
}

fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS as u64 {
        return value as usize;
    }
    let power = 63 - value.leading_zeros() as usize;
    let sub = ((value >> (power - 2)) & 3) as usize;
    (SUB_BUCKETS + (power - 2) * SUB_BUCKETS + sub).min(HISTOGRAM_BUCKETS - 1)
}

/// The middle of a bucket's range.
fn bucket_middle(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let power = (index - SUB_BUCKETS) / SUB_BUCKETS + 2;
    let sub = ((index - SUB_BUCKETS) % SUB_BUCKETS) as u64;
    let width = 1u64 << (power - 2);
    let lower = (1u64 << power) + sub * width;
    lower + width / 2
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: (0..HISTOGRAM_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, value: u64) {
        self.counts[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
    }

    fn clear(&self) {
        for count in self.counts.iter() {
            count.store(0, Ordering::Relaxed);
        }
    }

    fn add_into(&self, merged: &mut [u64]) {
        for (total, count) in merged.iter_mut().zip(self.counts.iter()) {
            *total += count.load(Ordering::Relaxed);
        }
    }
}

/// Quantiles read from merged histogram counts; `None` without samples.
fn quantiles(counts: &[u64], to_duration: fn(u64) -> Duration) -> Option<Quantiles> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let at = |quantile: f64| {
        let rank = ((quantile * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return to_duration(bucket_middle(index));
            }
        }
        to_duration(bucket_middle(counts.len() - 1))
    };
    Some(Quantiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

/// Latency quantiles (estimates: the middle of the histogram bucket holding the rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Counts of one period, as atomics.
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    attempts: AtomicU64,
    attempt_failures: AtomicU64,
}

impl Counts {
    fn clear(&self) {
        for count in self.fields() {
            count.store(0, Ordering::Relaxed);
        }
    }

    fn fields(&self) -> [&AtomicU64; 6] {
        [
            &self.started,
            &self.completed,
            &self.failed,
            &self.cancelled,
            &self.attempts,
            &self.attempt_failures,
        ]
    }

    fn add_into(&self, snapshot: &mut MetricsSnapshot) {
        snapshot.started += self.started.load(Ordering::Relaxed);
        snapshot.completed += self.completed.load(Ordering::Relaxed);
        snapshot.failed += self.failed.load(Ordering::Relaxed);
        snapshot.cancelled += self.cancelled.load(Ordering::Relaxed);
        snapshot.attempts += self.attempts.load(Ordering::Relaxed);
        snapshot.attempt_failures += self.attempt_failures.load(Ordering::Relaxed);
    }
}

struct WindowBucket {
    /// Which period (`now / BUCKET_MS`) the bucket holds.
    period: AtomicU64,
    counts: Counts,
    step_micros: Histogram,
    instance_millis: Histogram,
    /// What the instances that finished in the period recorded of each measure: locked only by
    /// finishes of instances that recorded some.
    measures: Mutex<MeasureTotals>,
}

/// Metrics of one workflow version.
pub struct VersionMetrics {
    totals: Counts,
    consecutive_failures: AtomicU64,
    window: Box<[WindowBucket]>,
}

impl Default for VersionMetrics {
    fn default() -> Self {
        VersionMetrics {
            totals: Counts::default(),
            consecutive_failures: AtomicU64::new(0),
            window: (0..WINDOW_BUCKETS)
                .map(|_| WindowBucket {
                    period: AtomicU64::new(u64::MAX),
                    counts: Counts::default(),
                    step_micros: Histogram::new(),
                    instance_millis: Histogram::new(),
                    measures: Mutex::default(),
                })
                .collect(),
        }
    }
}

impl VersionMetrics {
    /// The bucket for `now_ms`, cleared first if it held an older period.
    fn bucket(&self, now_ms: u64) -> &WindowBucket {
        let period = now_ms / BUCKET_MS;
        let bucket = &self.window[(period % WINDOW_BUCKETS as u64) as usize];
        let held = bucket.period.load(Ordering::Acquire);
        if held != period
            && bucket
                .period
                .compare_exchange(held, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.counts.clear();
            bucket.step_micros.clear();
            bucket.instance_millis.clear();
            bucket.measures.lock().clear();
        }
        bucket
    }

    /// An instance started.
    pub fn record_start(&self, now_ms: u64) {
        self.totals.started.fetch_add(1, Ordering::Relaxed);
        self.bucket(now_ms).counts.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A step attempt ended after `took`, failed or not.
    pub fn record_attempt(&self, now_ms: u64, took: Duration, failed: bool) {
        let bucket = self.bucket(now_ms);
        self.totals.attempts.fetch_add(1, Ordering::Relaxed);
        bucket.counts.attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.totals.attempt_failures.fetch_add(1, Ordering::Relaxed);
            bucket.counts.attempt_failures.fetch_add(1, Ordering::Relaxed);
        }
        bucket.step_micros.record(took.as_micros() as u64);
    }

    /// An instance finished with `status` after `took` from its start, having recorded
    /// `measures`.
    pub fn record_finish(&self, now_ms: u64, status: InstanceStatus, took: Duration, measures: &MeasureTotals) {
        let bucket = self.bucket(now_ms);
        if !measures.is_empty() {
            add_totals(&mut bucket.measures.lock(), measures);
        }
        let (total, windowed) = match status {
            InstanceStatus::Completed => (&self.totals.completed, &bucket.counts.completed),
            InstanceStatus::Failed => (&self.totals.failed, &bucket.counts.failed),
            _ => (&self.totals.cancelled, &bucket.counts.cancelled),
        };
        total.fetch_add(1, Ordering::Relaxed);
        windowed.fetch_add(1, Ordering::Relaxed);
        match status {
            InstanceStatus::Failed => {
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
            }
            InstanceStatus::Completed => self.consecutive_failures.store(0, Ordering::Relaxed),
            _ => {}
        }
        bucket.instance_millis.record(super::millis_saturating(took));
    }

    /// Totals since open (quantiles over the whole window ring).
    pub fn totals(&self, now_ms: u64) -> MetricsSnapshot {
        let ring = self.window(now_ms, Duration::from_millis(BUCKET_MS * WINDOW_BUCKETS as u64));
        let mut totals = MetricsSnapshot {
            step_latency: ring.step_latency,
            instance_latency: ring.instance_latency,
            consecutive_failures: ring.consecutive_failures,
            measures: ring.measures,
            ..MetricsSnapshot::default()
        };
        self.totals.add_into(&mut totals);
        totals
    }

    /// The figures of the last `length` (rounded up to whole buckets, at most the ring).
    pub fn window(&self, now_ms: u64, length: Duration) -> MetricsSnapshot {
        merged_window(&[self.export()], now_ms, length)
    }

    /// The window ring as it is now, to merge with other processes' (see [`merged_window`]).
    pub fn export(&self) -> WindowExport {
        let sparse = |histogram: &Histogram| {
            let mut counts = vec![0u64; HISTOGRAM_BUCKETS];
            histogram.add_into(&mut counts);
            counts
                .into_iter()
                .enumerate()
                .filter(|(_, count)| *count > 0)
                .map(|(index, count)| (index as u16, count))
                .collect()
        };
        let buckets = self
            .window
            .iter()
            .filter_map(|bucket| {
                let period = bucket.period.load(Ordering::Acquire);
                (period != u64::MAX).then(|| {
                    let mut counts = MetricsSnapshot::default();
                    bucket.counts.add_into(&mut counts);
                    ExportedBucket {
                        period,
                        counts: [
                            counts.started,
                            counts.completed,
                            counts.failed,
                            counts.cancelled,
                            counts.attempts,
                            counts.attempt_failures,
                        ],
                        step_micros: sparse(&bucket.step_micros),
                        instance_millis: sparse(&bucket.instance_millis),
                        measures: bucket.measures.lock().clone(),
                    }
                })
            })
            .collect();
        WindowExport {
            buckets,
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
        }
    }
}

/// A version's window ring in one process, as data: what each worker sharing a store publishes
/// so that the one evaluating rollouts sees every worker's steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowExport {
    /// The buckets holding a period.
    pub buckets: Vec<ExportedBucket>,
    /// Instances failed in a row in that process.
    pub consecutive_failures: u64,
}

/// One window bucket, as data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedBucket {
    /// The period (`now / BUCKET_MS`) it holds.
    pub period: u64,
    /// Started, completed, failed, cancelled, step attempts, failed attempts.
    pub counts: [u64; 6],
    /// Step latency histogram (µs): the non-empty buckets, as (index, count).
    pub step_micros: Vec<(u16, u64)>,
    /// Instance latency histogram (ms): the non-empty buckets, as (index, count).
    pub instance_millis: Vec<(u16, u64)>,
    /// What the instances that finished in it recorded, by measure (absent when none did, and
    /// in windows of builds before measures).
    #[serde(default, skip_serializing_if = "MeasureTotals::is_empty")]
    pub measures: MeasureTotals,
}

/// The figures of the last `length` (rounded up to whole buckets, at most the ring) over the
/// window rings of several processes: counts and histograms summed per period; the longest run
/// of consecutive failures among them (runs in different processes do not add up).
pub fn merged_window(exports: &[WindowExport], now_ms: u64, length: Duration) -> MetricsSnapshot {
    let current = now_ms / BUCKET_MS;
    let periods = super::millis_saturating(length)
        .div_ceil(BUCKET_MS)
        .clamp(1, WINDOW_BUCKETS as u64);
    let oldest = current.saturating_sub(periods - 1);
    let mut snapshot = MetricsSnapshot::default();
    let mut steps = vec![0u64; HISTOGRAM_BUCKETS];
    let mut instances = vec![0u64; HISTOGRAM_BUCKETS];
    let add = |histogram: &mut [u64], sparse: &[(u16, u64)]| {
        for (index, count) in sparse {
            if let Some(total) = histogram.get_mut(usize::from(*index)) {
                *total += count;
            }
        }
    };
    for export in exports {
        for bucket in export
            .buckets
            .iter()
            .filter(|bucket| (oldest..=current).contains(&bucket.period))
        {
            let [started, completed, failed, cancelled, attempts, attempt_failures] = bucket.counts;
            snapshot.started += started;
            snapshot.completed += completed;
            snapshot.failed += failed;
            snapshot.cancelled += cancelled;
            snapshot.attempts += attempts;
            snapshot.attempt_failures += attempt_failures;
            add(&mut steps, &bucket.step_micros);
            add(&mut instances, &bucket.instance_millis);
            add_totals(&mut snapshot.measures, &bucket.measures);
        }
        snapshot.consecutive_failures = snapshot.consecutive_failures.max(export.consecutive_failures);
    }
    snapshot.step_latency = quantiles(&steps, Duration::from_micros);
    snapshot.instance_latency = quantiles(&instances, Duration::from_millis);
    snapshot
}

/// One bucket of a version's metrics window, for a chart.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct MetricsPoint {
    /// When the bucket starts (ms of the engine's clock).
    pub at_ms: u64,
    /// Instances that finished in it.
    pub finished: u64,
    /// Failed among the completed and failed ones, if any finished.
    pub error_rate: Option<f64>,
    /// Step attempts in it.
    pub attempts: u64,
    /// The 95th percentile of its step attempts' latency (µs), if any ran.
    pub p95_step_micros: Option<u64>,
    /// What the instances that finished in it recorded, by measure: the sum of the values and
    /// how many (a summed measure's figure is `sum / finished`, an averaged one's `sum / count`).
    pub measures: std::collections::BTreeMap<String, PointMeasure>,
}

/// A measure's sum and count over one bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PointMeasure {
    /// The sum of the values recorded.
    pub sum: f64,
    /// How many values were recorded.
    pub count: u64,
}

/// The window of `exports` (several processes' rings of one version) as one point per bucket,
/// oldest first, the last the bucket `now_ms` falls in.
pub fn window_series(exports: &[WindowExport], now_ms: u64) -> Vec<MetricsPoint> {
    let current = now_ms / BUCKET_MS;
    let oldest = current.saturating_sub(WINDOW_BUCKETS as u64 - 1);
    (oldest..=current)
        .map(|period| {
            let end = period * BUCKET_MS + BUCKET_MS - 1;
            let snapshot = merged_window(exports, end, Duration::from_millis(BUCKET_MS));
            MetricsPoint {
                at_ms: period * BUCKET_MS,
                finished: snapshot.finished(),
                error_rate: snapshot.error_rate(),
                attempts: snapshot.attempts,
                p95_step_micros: snapshot.step_latency.map(|quantiles| quantiles.p95.as_micros() as u64),
                measures: snapshot
                    .measures
                    .iter()
                    .map(|(name, total)| {
                        let point = PointMeasure {
                            sum: total.sum(),
                            count: total.count,
                        };
                        (name.clone(), point)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A version's figures over a window (or since open).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Instances started.
    pub started: u64,
    /// Instances completed.
    pub completed: u64,
    /// Instances failed.
    pub failed: u64,
    /// Instances cancelled.
    pub cancelled: u64,
    /// Step attempts.
    pub attempts: u64,
    /// Step attempts that failed.
    pub attempt_failures: u64,
    /// Step attempt latency.
    pub step_latency: Option<Quantiles>,
    /// Instance latency, start to finish.
    pub instance_latency: Option<Quantiles>,
    /// Instances failed in a row, latest first, since the last completion (since open).
    pub consecutive_failures: u64,
    /// What the instances that finished in the window recorded, by measure (over the whole ring
    /// in totals since open).
    pub measures: MeasureTotals,
}

impl MetricsSnapshot {
    /// Instances that finished.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }

    /// Failed among finished (cancellations are not failures); `None` without finished instances.
    pub fn error_rate(&self) -> Option<f64> {
        let decided = self.completed + self.failed;
        (decided > 0).then(|| self.failed as f64 / decided as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::measure::MeasureTotal;

    fn none() -> MeasureTotals {
        MeasureTotals::new()
    }

    fn cost(units: i64, count: u64) -> MeasureTotals {
        [(
            "cost".to_string(),
            MeasureTotal {
                sum_units: units,
                count,
            },
        )]
        .into()
    }

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([1 << 20, 1 << 30, (1 << 39) + 5]) {
            let index = bucket_of(value);
            assert!(index >= previous, "bucket index goes down at {value}");
            previous = index;
            let middle = bucket_middle(index) as f64;
            if value >= 4 {
                assert!(
                    (middle - value as f64).abs() / value as f64 <= 0.2,
                    "{value} → {middle}"
                );
            }
        }
    }

    #[test]
    fn quantiles_and_rates_come_from_the_window() {
        let metrics = VersionMetrics::default();
        let now = 1_000_000;
        for millis in 1..=100u64 {
            metrics.record_attempt(now, Duration::from_millis(millis), millis > 90);
        }
        metrics.record_finish(now, InstanceStatus::Completed, Duration::from_secs(1), &none());
        metrics.record_finish(now, InstanceStatus::Failed, Duration::from_secs(1), &none());
        metrics.record_finish(now, InstanceStatus::Failed, Duration::from_secs(1), &none());
        let window = metrics.window(now, Duration::from_secs(60));
        assert_eq!((window.attempts, window.attempt_failures), (100, 10));
        let steps = window.step_latency.unwrap();
        let near = |got: Duration, want: u64| (got.as_secs_f64() * 1000.0 - want as f64).abs() <= want as f64 * 0.2;
        assert!(
            near(steps.p50, 50) && near(steps.p95, 95) && near(steps.p99, 99),
            "{steps:?}"
        );
        assert_eq!(window.error_rate(), Some(2.0 / 3.0));
        assert_eq!(window.consecutive_failures, 2);
        // Later periods: the old bucket leaves the window, the totals keep it.
        let later = now + BUCKET_MS * WINDOW_BUCKETS as u64;
        metrics.record_start(later);
        let window = metrics.window(later, Duration::from_secs(600));
        assert_eq!((window.started, window.attempts, window.finished()), (1, 0, 0));
        assert_eq!(metrics.totals(later).attempts, 100);
        metrics.record_finish(later, InstanceStatus::Completed, Duration::ZERO, &none());
        assert_eq!(metrics.window(later, Duration::ZERO).consecutive_failures, 0);
    }

    #[test]
    fn windows_of_several_processes_merge_as_if_one_had_recorded_everything() {
        let (first, second, both) = (
            VersionMetrics::default(),
            VersionMetrics::default(),
            VersionMetrics::default(),
        );
        let now = 5_000_000;
        for millis in 1..=60u64 {
            let (one, at) = if millis % 3 == 0 {
                (&second, now)
            } else {
                (&first, now - BUCKET_MS)
            };
            one.record_attempt(at, Duration::from_millis(millis), millis % 7 == 0);
            both.record_attempt(at, Duration::from_millis(millis), millis % 7 == 0);
        }
        first.record_finish(
            now - BUCKET_MS,
            InstanceStatus::Completed,
            Duration::from_secs(1),
            &cost(250_000, 1),
        );
        both.record_finish(
            now - BUCKET_MS,
            InstanceStatus::Completed,
            Duration::from_secs(1),
            &cost(250_000, 1),
        );
        second.record_finish(now, InstanceStatus::Failed, Duration::from_secs(2), &cost(500_000, 2));
        both.record_finish(now, InstanceStatus::Failed, Duration::from_secs(2), &cost(500_000, 2));
        let exports = [first.export(), second.export()];
        let decoded: Vec<WindowExport> = exports
            .iter()
            .map(|export| rmp_serde::from_slice(&rmp_serde::to_vec(export).unwrap()).unwrap())
            .collect();
        for length in [Duration::from_secs(5), Duration::from_secs(60)] {
            assert_eq!(
                merged_window(&decoded, now, length),
                both.window(now, length),
                "over {length:?}"
            );
        }
        assert_eq!(
            merged_window(&decoded, now, Duration::from_secs(60)).measures,
            cost(750_000, 3)
        );
        assert_eq!(
            merged_window(&decoded, now, Duration::from_secs(5)).measures,
            cost(500_000, 2),
            "only the bucket now"
        );
    }

    #[test]
    fn a_series_has_one_point_per_bucket_of_the_window_with_that_buckets_figures() {
        let metrics = VersionMetrics::default();
        let now = 100 * BUCKET_MS + 5_000;
        let earlier = now - 3 * BUCKET_MS;
        metrics.record_attempt(earlier, Duration::from_millis(4), false);
        metrics.record_finish(
            earlier,
            InstanceStatus::Failed,
            Duration::from_secs(1),
            &cost(1_500_000, 3),
        );
        metrics.record_finish(earlier, InstanceStatus::Completed, Duration::from_secs(1), &none());
        metrics.record_attempt(now, Duration::from_millis(40), false);
        let series = window_series(&[metrics.export()], now);
        assert_eq!(series.len(), WINDOW_BUCKETS);
        assert_eq!(
            series.last().unwrap().at_ms,
            100 * BUCKET_MS,
            "the last point is the current bucket"
        );
        let then = &series[series.len() - 4];
        assert_eq!(
            (then.at_ms, then.finished, then.error_rate, then.attempts),
            (97 * BUCKET_MS, 2, Some(0.5), 1)
        );
        assert_eq!(
            then.measures.get("cost"),
            Some(&PointMeasure { sum: 1.5, count: 3 }),
            "what the instances that finished then recorded"
        );
        let near = |micros: Option<u64>, want: u64| micros.is_some_and(|got| got.abs_diff(want) <= want / 5);
        assert!(near(then.p95_step_micros, 4_000), "{then:?}");
        assert!(near(series.last().unwrap().p95_step_micros, 40_000));
        let quiet = &series[series.len() - 2];
        assert_eq!(
            (quiet.finished, quiet.error_rate, quiet.p95_step_micros),
            (0, None, None)
        );
        assert!(quiet.measures.is_empty());
    }
}
