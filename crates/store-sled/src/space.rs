//! Free space on the embedded store's disk: refuses a write before the disk is full, so the store
//! never meets a refused write half-way through (sled stops for good after one) and the engine
//! continues by itself once space returns. It owns nothing but the reading of free space.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use strata_store::StoreError;

/// How much free space the embedded store keeps in reserve by default: room for sled to write
/// out what it has accepted and to reclaim segments.
pub const DEFAULT_DISK_RESERVE: u64 = 64 * 1024 * 1024;

/// While free space is at least this many reserves, it is read again at most this often: to use
/// up the margin (three reserves) between two reads, writes would have to reach 60 reserves a
/// second (3.75 GiB/s with the default reserve). Below that margin it is read at every write.
const RELAXED_MARGIN: u64 = 4;
const RELAXED_INTERVAL: Duration = Duration::from_millis(50);

/// Refuses writes while the disk holding a directory has less free space than a reserve.
pub(crate) struct SpaceGuard {
    directory: PathBuf,
    reserve: AtomicU64,
    /// When free space was last read, and what it was.
    last: Mutex<Option<(Instant, u64)>>,
}

impl SpaceGuard {
    /// A guard of `directory` keeping `reserve` bytes free (0: never refuses).
    pub(crate) fn new(directory: &Path, reserve: u64) -> SpaceGuard {
        SpaceGuard {
            directory: directory.to_path_buf(),
            reserve: AtomicU64::new(reserve),
            last: Mutex::new(None),
        }
    }

    /// Keeps `reserve` bytes free from now on (0: never refuses).
    pub(crate) fn set_reserve(&self, reserve: u64) {
        self.reserve.store(reserve, Ordering::Relaxed);
        *self.last.lock() = None;
    }

    /// `Ok` when a write may go ahead; a [`strata_store::BackendFailure::NoSpace`] error when the disk has less free space
    /// than the reserve. Free space that cannot be read does not stop writes (the write itself
    /// then says what is wrong).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let mut last = self.last.lock();
        let now = Instant::now();
        let available = match *last {
            Some((read_at, available))
                if available >= reserve.saturating_mul(RELAXED_MARGIN)
                    && now.duration_since(read_at) < RELAXED_INTERVAL =>
            {
                available
            }
            _ => match fs2::available_space(&self.directory) {
                Ok(available) => {
                    let was_refusing = last.is_some_and(|(_, before)| before < reserve);
                    if available < reserve && !was_refusing {
                        tracing::error!(directory = %self.directory.display(), available, reserve = reserve,
                            "the store's disk is nearly full: commits are refused until space is freed");
                    } else if available >= reserve && was_refusing {
                        tracing::info!(directory = %self.directory.display(), available, "the store's disk has room again: commits go ahead");
                    }
                    *last = Some((now, available));
                    available
                }
                Err(error) => {
                    tracing::debug!(directory = %self.directory.display(), %error, "could not read the free space of the store's disk");
                    return Ok(());
                }
            },
        };
        if available < reserve {
            return Err(crate::failures::disk_full(
                &self.directory.display().to_string(),
                available,
                reserve,
            ));
        }
        Ok(())
    }
}

/// Whether an I/O error is the disk refusing a write for want of room: no space, a file over
/// the process's size limit, or an exhausted quota.
pub(crate) fn refused_for_room(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let guard = SpaceGuard::new(dir.path(), u64::MAX);
        let Err(
            error @ StoreError::Backend {
                kind: strata_store::BackendFailure::NoSpace,
                ..
            },
        ) = guard.check()
        else {
            panic!("a reserve no disk has must refuse");
        };
        let message = error.to_string();
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        assert!(
            message.contains(&format!("less than the {} bytes", u64::MAX)),
            "{message}"
        );
        assert!(message.contains("Free space on that disk"), "{message}");
    }

    #[test]
    fn no_reserve_never_refuses_and_a_small_one_lets_writes_through() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SpaceGuard::new(dir.path(), 0).check().is_ok());
        assert!(SpaceGuard::new(dir.path(), 1).check().is_ok());
    }

    #[test]
    fn only_errors_for_want_of_room_count_as_refusals() {
        use std::io::{Error, ErrorKind};
        assert!(refused_for_room(&Error::from(ErrorKind::StorageFull)));
        assert!(refused_for_room(&Error::from(ErrorKind::FileTooLarge)));
        assert!(refused_for_room(&Error::from(ErrorKind::QuotaExceeded)));
        assert!(refused_for_room(&Error::from_raw_os_error(28))); // ENOSPC
        assert!(refused_for_room(&Error::from_raw_os_error(27))); // EFBIG
        assert!(!refused_for_room(&Error::from(ErrorKind::PermissionDenied)));
        assert!(!refused_for_room(&Error::from_raw_os_error(5))); // EIO
    }
}
