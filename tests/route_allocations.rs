//! `RoutingTable::route` makes no heap allocation (issue #3): counted with a global allocator that
//! counts the allocations of the measuring thread while it routes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata::routing::{
    Flag, RolloutRule, RouteInput, RoutingSpec, RoutingTable, Segment, VersionState, WorkflowRouting,
};
use strata::Version;

struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn routing_a_start_does_not_allocate() {
    let versions: Vec<VersionState> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|text| VersionState {
            workflow: "order".into(),
            version: Version::parse(text).unwrap(),
            routable: true,
        })
        .collect();
    let tenant = |name: &str| Segment {
        attribute: "tenant".into(),
        values: vec![name.into()],
    };
    let flag = Flag {
        name: "beta".into(),
        enabled: true,
        segments: vec![tenant("acme")],
    };
    let rules = vec![
        RolloutRule {
            candidate: Version::new(3, 0, 0),
            basis_points: 2_500,
            flag: Some("beta".into()),
            segments: vec![],
        },
        RolloutRule {
            candidate: Version::new(2, 0, 0),
            basis_points: 5_000,
            flag: None,
            segments: vec![tenant("globex")],
        },
        RolloutRule {
            candidate: Version::new(2, 0, 0),
            basis_points: 1_000,
            flag: None,
            segments: vec![],
        },
    ];
    let spec = RoutingSpec {
        flags: [("beta".to_string(), flag)].into_iter().collect(),
        workflows: [(
            "order".to_string(),
            WorkflowRouting {
                default: Some("^1".parse().unwrap()),
                rollouts: rules,
            },
        )]
        .into_iter()
        .collect(),
    };
    let table = RoutingTable::build(&spec, &versions, true).unwrap();
    let keys: Vec<String> = (0..1_000).map(|index| format!("customer-{index}")).collect();
    let attributes: Vec<Vec<(String, String)>> = ["acme", "globex", "initech"]
        .iter()
        .map(|tenant| vec![("tenant".to_string(), tenant.to_string())])
        .collect();
    let mut routed = [0usize; 3];
    COUNTING.with(|counting| counting.set(true));
    for (index, key) in keys.iter().enumerate() {
        let attributes = &attributes[index % 3];
        let with_key = RouteInput {
            routing_key: Some(key),
            instance_id: 0,
            attributes,
        };
        let by_id = RouteInput {
            routing_key: None,
            instance_id: index as u64,
            attributes,
        };
        for input in [with_key, by_id] {
            let version = table.route("order", input).expect("a version");
            routed[version.major as usize - 1] += 1;
        }
    }
    COUNTING.with(|counting| counting.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "route allocated");
    assert!(
        routed.iter().all(|count| *count > 0),
        "every version was routed to: {routed:?}"
    );
}
