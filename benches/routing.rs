//! Nanoseconds per routing decision with 1, 10 and 100 rollout rules. Every rule but the last has a
//! segment the start does not match, so a decision walks all rules before the last decides.
//!
//! Run: `cargo bench --bench routing`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strata::routing::{RolloutRule, RouteInput, RoutingSpec, RoutingTable, Segment, VersionState, WorkflowRouting};
use strata::Version;

fn table(rules: usize) -> RoutingTable {
    let versions: Vec<VersionState> = ["1.0.0", "2.0.0"]
        .iter()
        .map(|text| VersionState {
            workflow: "order".into(),
            version: Version::parse(text).unwrap(),
            routable: true,
        })
        .collect();
    let rollouts = (0..rules)
        .map(|index| RolloutRule {
            candidate: Version::new(2, 0, 0),
            basis_points: 5_000,
            flag: None,
            segments: if index + 1 == rules {
                Vec::new()
            } else {
                vec![Segment {
                    attribute: "tenant".into(),
                    values: vec![format!("tenant-{index}")],
                }]
            },
        })
        .collect();
    let spec = RoutingSpec {
        flags: Default::default(),
        workflows: [(
            "order".to_string(),
            WorkflowRouting {
                default: Some("^1".parse().unwrap()),
                rollouts,
            },
        )]
        .into_iter()
        .collect(),
    };
    RoutingTable::build(&spec, &versions, true).expect("valid spec")
}

fn route(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("route");
    let attributes = vec![("tenant".to_string(), "someone-else".to_string())];
    let keys: Vec<String> = (0..1_024).map(|index| format!("customer-{index}")).collect();
    for rules in [1, 10, 100] {
        let table = table(rules);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("rules", rules), |bencher| {
            bencher.iter(|| {
                next = (next + 1) % keys.len();
                let input = RouteInput {
                    routing_key: Some(&keys[next]),
                    instance_id: 0,
                    attributes: &attributes,
                };
                black_box(table.route(black_box("order"), input))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
