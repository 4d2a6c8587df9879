//! The exec actuator: runs the program that the action map names for a command's action.

use super::map::ActionMap;
use salve_connectors::actuator::{Actuator, Command, CommandContext, Outcome};
use std::process::Stdio;
use std::time::Duration;

/// The most of a program's output that goes into an ack's `detail`, in bytes.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Runs mapped programs, directly (no shell), with a time limit.
#[derive(Debug, Clone)]
pub struct ExecActuator {
    map: ActionMap,
}

impl ExecActuator {
    /// An actuator for the actions in `map`.
    pub fn new(map: ActionMap) -> Self {
        Self { map }
    }
}

impl Actuator for ExecActuator {
    async fn handle(&self, command: &Command, _context: &CommandContext) -> Outcome {
        let Some(template) = self.map.get(&command.action) else {
            return Outcome::Rejected(format!(
                "the action map has no program for action `{}`",
                command.action
            ));
        };
        match template.render(command) {
            Ok(argv) => run_program(&argv, self.map.timeout).await,
            Err(reason) => Outcome::Rejected(reason),
        }
    }
}

/// Runs `argv` and reports its exit status and output.
async fn run_program(argv: &[String], timeout: Duration) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::Rejected("empty command".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A program that outlives its time limit, or the runner, is killed.
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("cannot start `{program}`: {error}")),
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Outcome::Failed(format!(
            "`{program}` did not finish within {}; killed",
            humantime::format_duration(timeout)
        )),
        Ok(Err(error)) => Outcome::Failed(format!("waiting for `{program}`: {error}")),
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = stderr.trim_end();
            if !stderr.is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("stderr: ");
                text.push_str(stderr);
            }
            if output.status.success() {
                Outcome::Succeeded(truncate(&text, MAX_DETAIL_BYTES))
            } else {
                Outcome::Failed(truncate(
                    &format!("{}: {text}", output.status),
                    MAX_DETAIL_BYTES,
                ))
            }
        }
    }
}

/// At most `max` bytes of `text`, cut on a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> String {
    const MARK: &str = " …[truncated]";
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}
