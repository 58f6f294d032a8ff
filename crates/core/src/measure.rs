//! Measures: what a step's work cost and how good it was (tokens, a price, a quality score),
//! declared on a version with how they aggregate, recorded by steps through
//! [`StepCtx::record`](crate::workflow::StepCtx::record), and totalled.
//!
//! Owns the declaration ([`MeasureSpec`], [`MeasureKind`]), the fixed-point totals an instance
//! accumulates and a version sums ([`MeasureTotal`], [`MeasureTotals`]), what a step records in
//! one attempt ([`MeasureRecorder`]), and the figure a gate compares ([`figure`]).
//!
//! Values are kept in millionths (six decimal places) as whole numbers, so that totals add up the
//! same whatever order commits land in — across restarts, and across the workers of a shared
//! store. A total saturates at ±9.2 × 10¹² units.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// How a measure aggregates into a version's figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureKind {
    /// Summed per instance, like a cost: the figure is the mean total per finished instance
    /// (an instance that recorded none counts as 0).
    Summed,
    /// Averaged over every value recorded, like a score: the figure is the mean value.
    Averaged,
}

impl MeasureKind {
    /// How the kind is written in the API, the CLI and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            MeasureKind::Summed => "summed",
            MeasureKind::Averaged => "averaged",
        }
    }
}

/// A measure a version declares: its name and how it aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureSpec {
    /// Its name, as steps record it (`tokens`, `cost_usd`, `quality`).
    pub name: String,
    /// How it aggregates.
    pub kind: MeasureKind,
}

/// How many stored units make one: values are kept to six decimal places.
pub const UNITS_PER_ONE: f64 = 1_000_000.0;

/// `value` in stored units (millionths), rounded and saturated.
pub fn to_units(value: f64) -> i64 {
    // `as` saturates, and maps NaN to 0 (recordings are checked to be finite before this).
    (value * UNITS_PER_ONE).round() as i64
}

/// Stored units back as a value.
pub fn from_units(units: i64) -> f64 {
    units as f64 / UNITS_PER_ONE
}

/// The sum and the number of values of one measure: what an instance accumulated, or a
/// version's total over its finished instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureTotal {
    /// The sum of the values, in millionths.
    #[serde(rename = "s")]
    pub sum_units: i64,
    /// How many values were recorded.
    #[serde(rename = "c")]
    pub count: u64,
}

impl MeasureTotal {
    /// The sum as a value.
    pub fn sum(&self) -> f64 {
        from_units(self.sum_units)
    }

    /// The mean of the values recorded; `None` without one.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum() / self.count as f64)
    }

    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &MeasureTotal) {
        self.sum_units = self.sum_units.saturating_add(other.sum_units);
        self.count = self.count.saturating_add(other.count);
    }

    /// What was added since `baseline`.
    pub fn since(&self, baseline: &MeasureTotal) -> MeasureTotal {
        MeasureTotal {
            sum_units: self.sum_units.saturating_sub(baseline.sum_units),
            count: self.count.saturating_sub(baseline.count),
        }
    }
}

/// Totals by measure name.
pub type MeasureTotals = BTreeMap<String, MeasureTotal>;

/// Adds every total of `added` into `totals`.
pub fn add_totals(totals: &mut MeasureTotals, added: &MeasureTotals) {
    for (name, total) in added {
        match totals.get_mut(name) {
            Some(held) => held.add(total),
            None => {
                totals.insert(name.clone(), *total);
            }
        }
    }
}

/// A measure's figure over a set of finished instances, as a gate compares it: for a summed
/// measure the mean total per instance over `finished` instances, for an averaged one the mean
/// value; with the sample it stands on (instances, or values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasureFigure {
    /// The figure; `None` without a sample.
    pub value: Option<f64>,
    /// How many instances (summed) or values (averaged) it stands on.
    pub sample: u64,
}

/// The figure of a measure of `kind` whose values added `total` over `finished` instances.
pub fn figure(kind: MeasureKind, total: &MeasureTotal, finished: u64) -> MeasureFigure {
    match kind {
        MeasureKind::Summed => MeasureFigure {
            value: (finished > 0).then(|| total.sum() / finished as f64),
            sample: finished,
        },
        MeasureKind::Averaged => MeasureFigure {
            value: total.mean(),
            sample: total.count,
        },
    }
}

/// What one attempt of a step recorded, shared between the step's context and the driver that
/// takes it when the attempt is over. Only the attempt whose result the instance keeps (it
/// succeeded, or failed for good) has its values committed: a retried attempt's are dropped, so
/// a step's measures count once however often it ran.
#[derive(Debug)]
pub struct MeasureRecorder {
    declared: Arc<[MeasureSpec]>,
    recorded: Mutex<Vec<(usize, f64)>>,
}

impl MeasureRecorder {
    /// A recorder that takes the measures in `declared`.
    pub fn new(declared: Arc<[MeasureSpec]>) -> MeasureRecorder {
        MeasureRecorder {
            declared,
            recorded: Mutex::new(Vec::new()),
        }
    }

    /// Records `value` of `measure`. A measure the version does not declare, or a value that is
    /// not a finite number, is dropped with a warning naming it.
    pub fn record(&self, measure: &str, value: f64) {
        let Some(index) = self.declared.iter().position(|spec| spec.name == measure) else {
            let declared: Vec<&str> = self.declared.iter().map(|spec| spec.name.as_str()).collect();
            tracing::warn!(
                measure,
                ?declared,
                "a step recorded a measure its version does not declare; declare it with .measure(name, kind) — the value is dropped"
            );
            return;
        };
        if !value.is_finite() {
            tracing::warn!(
                measure,
                value,
                "a step recorded a measure that is not a finite number; the value is dropped"
            );
            return;
        }
        if let Ok(mut recorded) = self.recorded.lock() {
            recorded.push((index, value));
        }
    }

    /// Takes what was recorded, as totals by measure.
    pub fn take(&self) -> MeasureTotals {
        let recorded = self
            .recorded
            .lock()
            .map(|mut recorded| std::mem::take(&mut *recorded))
            .unwrap_or_default();
        let mut totals = MeasureTotals::new();
        for (index, value) in recorded {
            if let Some(spec) = self.declared.get(index) {
                totals.entry(spec.name.clone()).or_default().add(&MeasureTotal {
                    sum_units: to_units(value),
                    count: 1,
                });
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Arc<[MeasureSpec]> {
        Arc::from(vec![
            MeasureSpec {
                name: "cost".into(),
                kind: MeasureKind::Summed,
            },
            MeasureSpec {
                name: "quality".into(),
                kind: MeasureKind::Averaged,
            },
        ])
    }

    #[test]
    fn a_recorder_keeps_declared_finite_values_only() {
        let recorder = MeasureRecorder::new(declared());
        recorder.record("cost", 0.25);
        recorder.record("cost", 0.5);
        recorder.record("quality", 0.9);
        recorder.record("cots", 1.0);
        recorder.record("quality", f64::NAN);
        recorder.record("cost", f64::INFINITY);
        let totals = recorder.take();
        assert_eq!(
            totals.get("cost"),
            Some(&MeasureTotal {
                sum_units: 750_000,
                count: 2
            })
        );
        assert_eq!(
            totals.get("quality"),
            Some(&MeasureTotal {
                sum_units: 900_000,
                count: 1
            })
        );
        assert_eq!(totals.len(), 2);
        assert!(recorder.take().is_empty(), "taking empties the recorder");
    }

    #[test]
    fn totals_add_the_same_in_any_order_and_saturate() {
        let values = [0.1, 0.2, 0.3, 1e-6, 12_345.678_9];
        let mut forward = MeasureTotal::default();
        let mut backward = MeasureTotal::default();
        for value in values {
            forward.add(&MeasureTotal {
                sum_units: to_units(value),
                count: 1,
            });
        }
        for value in values.iter().rev() {
            backward.add(&MeasureTotal {
                sum_units: to_units(*value),
                count: 1,
            });
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.sum_units, 12_346_278_901);
        let mut huge = MeasureTotal {
            sum_units: i64::MAX - 1,
            count: 1,
        };
        huge.add(&MeasureTotal {
            sum_units: to_units(1e30),
            count: 1,
        });
        assert_eq!(huge.sum_units, i64::MAX);
    }

    #[test]
    fn a_summed_figure_is_per_finished_instance_and_an_averaged_one_per_value() {
        let total = MeasureTotal {
            sum_units: to_units(3.0),
            count: 2,
        };
        assert_eq!(
            figure(MeasureKind::Summed, &total, 4),
            MeasureFigure {
                value: Some(0.75),
                sample: 4
            }
        );
        assert_eq!(
            figure(MeasureKind::Averaged, &total, 4),
            MeasureFigure {
                value: Some(1.5),
                sample: 2
            }
        );
        assert_eq!(figure(MeasureKind::Summed, &total, 0).value, None);
        assert_eq!(figure(MeasureKind::Averaged, &MeasureTotal::default(), 9).value, None);
    }
}
