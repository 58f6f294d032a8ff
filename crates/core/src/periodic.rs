//! A named thread that runs a task at an interval until it is stopped or the task says it is done:
//! `Buffered` mode's flusher and the embedded store's checkpointer. It owns only the thread and
//! the stopping of it.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread running a task every interval; dropping it (or [`PeriodicThread::stop`]) stops the
/// thread and waits for the run in progress.
pub struct PeriodicThread {
    name: &'static str,
    /// Dropped to stop the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PeriodicThread {
    /// Starts thread `name`, which runs `task` every `interval` until stopped or until `task`
    /// returns `false`.
    pub fn start(
        name: &'static str,
        interval: Duration,
        mut task: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<PeriodicThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if !task() {
                    return;
                }
            }
        })?;
        Ok(PeriodicThread {
            name,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for the run in progress.
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(thread = self.name, "the thread panicked");
            }
        }
    }
}

impl Drop for PeriodicThread {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn counting(done_after: usize) -> (Arc<AtomicUsize>, PeriodicThread) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let thread = PeriodicThread::start("strata-test", Duration::from_millis(1), move || {
            counted.fetch_add(1, Ordering::SeqCst) + 1 < done_after
        })
        .unwrap();
        (runs, thread)
    }

    #[test]
    fn a_task_that_says_it_is_done_runs_no_more() {
        let (runs, mut thread) = counting(3);
        while runs.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        thread.stop();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn stop_waits_for_the_thread_so_no_run_follows_it() {
        let (runs, mut thread) = counting(usize::MAX);
        while runs.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        thread.stop();
        let after_stop = runs.load(Ordering::SeqCst);
        assert!(thread.thread.is_none());
        assert_eq!(runs.load(Ordering::SeqCst), after_stop);
    }
}
