//! Where a command's answers go: a table or sentence for people, the API's JSON with `--json`,
//! written so that a reader that goes away ends the program quietly.

use std::io::Write;

use serde_json::Value;

/// Writes `text` and a newline to standard output. A reader that went away (`strata ... | head`)
/// ends the program quietly with success: what it wanted was printed. Any other failure to
/// write ends it with exit code 4.
pub(crate) fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("strata: could not write to standard output: {error}");
        std::process::exit(4);
    }
}

/// Where answers go.
pub(crate) struct Output {
    /// Print the API's JSON.
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text` for people.
    pub(crate) fn show(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            print_line(&serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            print_line(&text());
        }
    }

    /// Prints the answer of a change: its JSON, or `sentence`.
    pub(crate) fn done(&self, value: &Value, sentence: &str) {
        self.show(value, || sentence.to_string());
    }
}
