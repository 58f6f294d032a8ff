//! The data directory's own lock (`strata.lock`): one engine at a time uses a directory. It is
//! taken before sled's files are opened and held as long as the store is open; it names the
//! process holding it, so a second engine is refused at once with that process's id, and only
//! this process's own store, still closing, is waited for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use fs2::FileExt;

use strata_store::StoreError;

/// The lock file's name in the data directory.
pub(super) const LOCK_FILE: &str = "strata.lock";

/// How long this process waits for a store of its own that is still closing.
const OWN_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The held lock; let go of when dropped (the file is closed).
#[derive(Debug)]
pub(super) struct DirectoryLock {
    _file: File,
}

impl DirectoryLock {
    /// Takes the lock of `directory` (created if missing), writing this process's id in it. Held
    /// by another process: a [`strata_store::BackendFailure::InUse`] error at once, naming it. Held by this
    /// process (a store of its own closing): waited for, up to ten seconds.
    pub(super) fn acquire(directory: &Path) -> Result<DirectoryLock, StoreError> {
        let failed = |error: std::io::Error| {
            StoreError::failed(
                "lock the data directory",
                format!("{}: {error}", directory.join(LOCK_FILE).display()),
            )
        };
        std::fs::create_dir_all(directory).map_err(failed)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join(LOCK_FILE))
            .map_err(failed)?;
        let deadline = Instant::now() + OWN_CLOSE_WAIT;
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(error) if error.kind() == fs2::lock_contended_error().kind() => {
                    let holder = holder(&mut file);
                    if holder != Some(std::process::id()) || Instant::now() >= deadline {
                        return Err(crate::failures::directory_in_use(
                            &directory.display().to_string(),
                            holder,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(failed(error)),
            }
        }
        let written = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        })();
        written.map_err(failed)?;
        Ok(DirectoryLock { _file: file })
    }
}

/// The process id the lock file names, if it reads.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_this_process_waits_for_the_first_and_takes_it_when_let_go() {
        let directory = tempfile::tempdir().unwrap();
        let first = DirectoryLock::acquire(directory.path()).unwrap();
        let written = std::fs::read_to_string(directory.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        DirectoryLock::acquire(directory.path()).expect("taken once this process's own store let go");
        letting_go.join().unwrap();
    }
}
