//! Which version a new instance starts on: the caller's version requirement if given, else the
//! routing table (flags, sticky percentage rollouts, a default per workflow), else the newest
//! registered `Active` version. Owns the sticky hash and the table snapshot; the config file that
//! fills the table belongs to `config`.

mod hash;
mod table;

pub use hash::{bucket, bucket_of_start, percent_to_basis_points, BUCKETS};
pub use table::{
    describe_changes, Flag, RolloutRule, RouteInput, RouteReason, RoutingError, RoutingSpec, RoutingTable, Segment,
    VersionState, WorkflowRouting,
};

use std::fmt;

use semver::{Version, VersionReq};

/// What the caller asks for when starting an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionRequest {
    /// The newest version that may take new instances.
    #[default]
    Newest,
    /// The newest such version matching a semver requirement (`=1.0.0` for an exact version).
    Matching(VersionReq),
    /// The version the routing table chose, if it can still take new instances; else the newest.
    Preferred(Version),
}

impl fmt::Display for VersionRequest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRequest::Newest => formatter.write_str("newest"),
            VersionRequest::Matching(requirement) => write!(formatter, "{requirement}"),
            VersionRequest::Preferred(version) => write!(formatter, "routed to {version}"),
        }
    }
}

/// The newest of `candidates` (versions that may take new instances) that fits `request`.
pub fn pick<'a>(
    candidates: impl Iterator<Item = &'a Version> + Clone,
    request: &VersionRequest,
) -> Option<&'a Version> {
    match request {
        VersionRequest::Newest => candidates.max(),
        VersionRequest::Matching(requirement) => candidates.filter(|version| requirement.matches(version)).max(),
        VersionRequest::Preferred(preferred) => candidates
            .clone()
            .find(|version| *version == preferred)
            .or_else(|| candidates.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions() -> Vec<Version> {
        ["1.0.0", "1.1.0", "2.0.0"]
            .iter()
            .map(|text| Version::parse(text).unwrap())
            .collect()
    }

    #[test]
    fn newest_is_the_highest_candidate() {
        let versions = versions();
        assert_eq!(
            pick(versions.iter(), &VersionRequest::Newest).unwrap().to_string(),
            "2.0.0"
        );
    }

    #[test]
    fn a_requirement_picks_the_newest_match() {
        let versions = versions();
        let caret = VersionRequest::Matching(VersionReq::parse("^1").unwrap());
        assert_eq!(pick(versions.iter(), &caret).unwrap().to_string(), "1.1.0");
        let exact = VersionRequest::Matching(VersionReq::parse("=1.0.0").unwrap());
        assert_eq!(pick(versions.iter(), &exact).unwrap().to_string(), "1.0.0");
        let none = VersionRequest::Matching(VersionReq::parse("^3").unwrap());
        assert!(pick(versions.iter(), &none).is_none());
    }
}
