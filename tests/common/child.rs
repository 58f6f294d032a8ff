//! Runs an ignored test of the current test binary as a child process (the tests of a full disk
//! and of a damaged store file run the engine in a process of its own).

use std::path::Path;
use std::process::{Command, Output};

/// Runs the ignored test `name` of this test binary in a child process, with the environment
/// variable `variable` set to `dir` (without it the child test returns at once).
pub fn run(name: &str, variable: &str, dir: &Path) -> Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(variable, dir)
        .output()
        .expect("spawn the child")
}

/// The child's standard output, if it succeeded and printed `marker`; otherwise fails the test
/// with everything the child printed.
pub fn succeeded(output: &Output, marker: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(marker),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
