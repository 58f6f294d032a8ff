//! The residency rule: what one write may do to a version's lifecycle, and what it does to it.
//! Every store applies this one rule inside the write itself — sled in `apply`, PostgreSQL in the
//! transaction, on the version rows it locked — so that one process and many decide alike.

use crate::StoreError;
use strata_core::instance::VersionKey;
use strata_core::version::VersionStatus;

/// One version as a write finds and leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionWrite {
    /// Its stored status before the write (`None`: never set, which counts as `Active`).
    pub before: Option<VersionStatus>,
    /// The status the write sets (the last one, if it sets several).
    pub set: Option<VersionStatus>,
    /// Whether the write starts instances on it.
    pub starts: bool,
    /// Whether the write brings instances that already existed onto it (moved in, revived).
    pub arrivals: bool,
    /// Its live instances once the write is applied.
    pub live_after: u64,
}

/// What a write leaves as a version's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Its status after the write (`None`: never set).
    pub status: Option<VersionStatus>,
    /// Whether this write drains it (`Draining` left with no live instance): the write stores
    /// `Drained` and alone reports it.
    pub drains: bool,
    /// Whether this write undoes its drain (`Drained` left with live instances, revived onto
    /// it): the write stores `Draining`, and the version's code must stay.
    pub undrains: bool,
}

/// Decides one version's residency for a write, or refuses the whole write: a retired version
/// made active ([`StoreError::VersionRetired`]), a version retired with live instances
/// ([`StoreError::LiveInstances`]), a start on a version the write leaves not `Active`
/// ([`StoreError::VersionNotAccepting`]), instances brought onto a retired version (the same).
/// A `Draining` version the write leaves with no live instance is drained by it; a `Drained` one
/// it leaves with live instances is `Draining` again.
pub fn decide(key: &VersionKey, write: VersionWrite) -> Result<Decision, StoreError> {
    use VersionStatus::{Active, Drained, Draining, Retired};
    if write.set == Some(Active) && write.before == Some(Retired) {
        return Err(StoreError::VersionRetired { key: key.clone() });
    }
    if write.set == Some(Retired) && write.live_after > 0 {
        return Err(StoreError::LiveInstances {
            key: key.clone(),
            live: write.live_after,
        });
    }
    let after = write.set.or(write.before);
    if let Some(status) = after.filter(|status| write.starts && *status != Active) {
        return Err(StoreError::VersionNotAccepting {
            key: key.clone(),
            status,
        });
    }
    if write.arrivals && after == Some(Retired) {
        return Err(StoreError::VersionNotAccepting {
            key: key.clone(),
            status: Retired,
        });
    }
    if after == Some(Draining) && write.live_after == 0 {
        return Ok(Decision {
            status: Some(Drained),
            drains: true,
            undrains: false,
        });
    }
    if after == Some(Drained) && write.live_after > 0 {
        return Ok(Decision {
            status: Some(Draining),
            drains: false,
            undrains: true,
        });
    }
    Ok(Decision {
        status: after,
        drains: false,
        undrains: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use VersionStatus::{Active, Drained, Draining, Retired};

    fn key() -> VersionKey {
        VersionKey::new("w", semver::Version::new(1, 0, 0))
    }

    fn write(before: Option<VersionStatus>, set: Option<VersionStatus>, starts: bool, live_after: u64) -> VersionWrite {
        VersionWrite {
            before,
            set,
            starts,
            arrivals: false,
            live_after,
        }
    }

    fn arrival(before: Option<VersionStatus>, live_after: u64) -> VersionWrite {
        VersionWrite {
            arrivals: true,
            ..write(before, None, false, live_after)
        }
    }

    #[test]
    fn a_start_counts_against_the_status_the_write_leaves() {
        assert!(
            decide(&key(), write(None, None, true, 1)).is_ok(),
            "never set counts as Active"
        );
        assert!(decide(&key(), write(Some(Drained), Some(Active), true, 1)).is_ok());
        for (before, set) in [
            (None, Some(Draining)),
            (Some(Draining), None),
            (Some(Active), Some(Draining)),
        ] {
            assert!(
                matches!(
                    decide(&key(), write(before, set, true, 1)),
                    Err(StoreError::VersionNotAccepting { status: Draining, .. })
                ),
                "{before:?} then {set:?}"
            );
        }
    }

    #[test]
    fn a_draining_version_left_without_live_instances_is_drained_by_that_write_alone() {
        let drained = Decision {
            status: Some(Drained),
            drains: true,
            undrains: false,
        };
        assert_eq!(decide(&key(), write(Some(Draining), None, false, 0)).unwrap(), drained);
        assert_eq!(
            decide(&key(), write(Some(Active), Some(Draining), false, 0)).unwrap(),
            drained
        );
        assert!(!decide(&key(), write(Some(Draining), None, false, 1)).unwrap().drains);
        assert!(
            !decide(&key(), write(Some(Drained), None, false, 0)).unwrap().drains,
            "drained once"
        );
        assert_eq!(
            decide(&key(), write(Some(Drained), Some(Active), false, 0)).unwrap(),
            Decision {
                status: Some(Active),
                drains: false,
                undrains: false,
            },
            "a drain undone"
        );
    }

    #[test]
    fn instances_revived_onto_a_drained_version_make_it_draining_again_and_a_retired_one_takes_none() {
        assert_eq!(
            decide(&key(), arrival(Some(Drained), 2)).unwrap(),
            Decision {
                status: Some(Draining),
                drains: false,
                undrains: true,
            }
        );
        assert!(!decide(&key(), arrival(Some(Draining), 2)).unwrap().undrains);
        assert!(!decide(&key(), arrival(Some(Active), 2)).unwrap().undrains);
        assert!(matches!(
            decide(&key(), arrival(Some(Retired), 1)),
            Err(StoreError::VersionNotAccepting { status: Retired, .. })
        ));
    }

    #[test]
    fn retiring_needs_no_live_instance_and_is_for_good() {
        assert!(matches!(
            decide(&key(), write(Some(Drained), Some(Retired), false, 2)),
            Err(StoreError::LiveInstances { live: 2, .. })
        ));
        assert!(decide(&key(), write(Some(Drained), Some(Retired), false, 0)).is_ok());
        assert!(matches!(
            decide(&key(), write(Some(Retired), Some(Active), false, 0)),
            Err(StoreError::VersionRetired { .. })
        ));
    }
}
