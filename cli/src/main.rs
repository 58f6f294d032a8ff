//! `strata`: the operator's command line. It talks to an engine's admin API (`--url`,
//! `STRATA_ADMIN_URL`; `--token`, `STRATA_ADMIN_TOKEN`), prints tables for people and JSON for
//! scripts (`--json`), and exits with codes scripts can rely on (see `strata --help`).

mod args;
mod client;
mod commands;
mod error;
mod history;
mod moments;
mod operation;
mod output;
mod revive;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if let args::Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut args::Cli::command(), "strata", &mut script);
        output::print_line(String::from_utf8_lossy(&script).trim_end());
        return ExitCode::SUCCESS;
    }
    let outcome = client::AdminClient::new(&cli.url, cli.token.clone())
        .and_then(|client| commands::run(&client, cli.command, cli.json));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = error.to_string();
            if cli.json {
                // Scripts read the failure as they read answers: one JSON object (on stderr).
                let mut failure = serde_json::json!({ "error": message, "exit_code": error.exit_code() });
                if let error::CliError::Refused { status, message } = &error {
                    failure["error"] = serde_json::Value::from(message.as_str());
                    failure["status"] = serde_json::Value::from(*status);
                }
                if !message.is_empty() {
                    eprintln!("{failure}");
                }
            } else if !message.is_empty() {
                eprintln!("strata: {message}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
