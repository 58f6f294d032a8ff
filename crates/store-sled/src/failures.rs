//! The embedded store's failures in its own words: which directory, what the system said, and
//! what to do, each of one [`BackendFailure`] kind.

use strata_store::{BackendFailure, StoreError};

/// Another engine has the data directory open.
pub(crate) fn directory_in_use(directory: &str, holder: Option<u32>) -> StoreError {
    let holder = holder.map_or_else(String::new, |pid| format!(" (process {pid})"));
    StoreError::backend(
        BackendFailure::InUse,
        format!("the data directory {directory} is in use by another Strata engine{holder}; stop that engine first, or give this one a directory of its own"),
    )
}

/// The disk has less free space than the reserve: nothing was written.
pub(crate) fn disk_full(directory: &str, available: u64, reserve: u64) -> StoreError {
    StoreError::backend(
        BackendFailure::NoSpace,
        format!("the disk holding {directory} has {available} bytes free, less than the {reserve} bytes Strata keeps in reserve; nothing was written. Free space on that disk: commits are retried and the engine continues by itself"),
    )
}

/// The disk refused a write (full, a file over the process's size limit, a quota).
pub(crate) fn write_refused(operation: &str, message: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::WriteRefused,
        format!("the disk refused the store's {operation} ({message}): it is full or over a size limit or quota. Everything acknowledged before is kept; free space, then restart the engine to continue"),
    )
}

/// The store's files could not be read back; the directory is marked and refused.
pub(crate) fn damaged(directory: &str, reason: &str) -> StoreError {
    StoreError::backend(
        BackendFailure::Damaged,
        format!("the store in {directory} could not be recovered: its files are damaged ({reason}). Restore the directory from a backup. Strata refuses to open it while strata-damaged.txt is there: sled may have rewritten part of a damaged file while failing (it does when it panics), and opening it again could then silently lose the records after the damage; to open what is left anyway, delete that file"),
    )
}
