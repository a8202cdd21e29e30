//! nsxcli's errors and the exit codes scripts see.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | the command worked |
//! | 1 | the command failed: the API answered with an error, a name was not found, a file could not be written |
//! | 2 | usage: unknown command, bad or missing argument |
//! | 3 | the agent (or, with `--gateway`, the gateway's admin API) is not reachable |

/// The command worked.
pub const EXIT_OK: u8 = 0;
/// The command failed (API error, unknown name, local I/O).
pub const EXIT_FAILED: u8 = 1;
/// Unknown command or bad argument.
pub const EXIT_USAGE: u8 = 2;
/// The agent (or gateway) could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Everything that can go wrong running one command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The agent's unix socket could not be reached.
    #[error("Cannot reach the NSX agent at {socket}: {reason} (is nsx-agent running?)")]
    AgentUnreachable { socket: String, reason: String },
    /// The agent's or gateway's API answered `{"error": ...}` (or an HTTP error).
    #[error("{0}")]
    Api(String),
    /// The reply could not be understood (not JSON, not an object, cut short).
    #[error("bad reply from {what}: {reason}")]
    BadReply { what: String, reason: String },
    /// The command failed on this side: a name that does not exist, a file
    /// that cannot be written, a packet that cannot be built.
    #[error("{0}")]
    Failed(String),
    /// The gateway's admin API could not be reached.
    #[error(
        "Cannot reach the NSX gateway admin API at {url}: {reason} (is nsx-gateway serve running?)"
    )]
    GatewayUnreachable { url: String, reason: String },
    /// A command word nobody knows, with the closest known one.
    #[error("Unknown command \"{line}\"{}", did_you_mean(.suggestion))]
    UnknownCommand {
        line: String,
        suggestion: Option<String>,
    },
    /// A known command with a bad, missing or extra argument.
    #[error("{message}")]
    Usage { message: String, usage: Vec<String> },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(": did you mean \"{s}\"?"),
        None => ": type \"?\" or \"help\" for the commands".to_string(),
    }
}

impl Error {
    /// The process exit code this error maps to.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Api(_) | Error::BadReply { .. } | Error::Failed(_) => EXIT_FAILED,
            Error::UnknownCommand { .. } | Error::Usage { .. } => EXIT_USAGE,
            Error::AgentUnreachable { .. } | Error::GatewayUnreachable { .. } => EXIT_UNREACHABLE,
        }
    }

    /// The lines to print on stderr: `% message`, then the usage lines of a
    /// usage error.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = format!("% {self}\n");
        if let Error::Usage { usage, .. } = self {
            for (i, u) in usage.iter().enumerate() {
                let lead = if i == 0 { "Usage:" } else { "      " };
                out.push_str(&format!("{lead} {u}\n"));
            }
        }
        out
    }

    /// A usage error for one command.
    pub(crate) fn usage(message: impl Into<String>, usage: &str) -> Error {
        Error::Usage {
            message: message.into(),
            usage: vec![usage.to_string()],
        }
    }
}

/// An I/O error's text without the `(os error N)` tail.
#[must_use]
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_message_and_code() {
        let e = Error::AgentUnreachable {
            socket: "/var/run/nsx-agent/nsxagent.sock".into(),
            reason: io_reason(&std::io::Error::from_raw_os_error(libc::ENOENT)),
        };
        assert_eq!(
            e.render(),
            "% Cannot reach the NSX agent at /var/run/nsx-agent/nsxagent.sock: \
             No such file or directory (is nsx-agent running?)\n"
        );
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn usage_lines() {
        let e = Error::Usage {
            message: "Incomplete command".into(),
            usage: vec!["get a".into(), "get b".into()],
        };
        assert_eq!(
            e.render(),
            "% Incomplete command\nUsage: get a\n       get b\n"
        );
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn unknown_with_and_without_suggestion() {
        let e = Error::UnknownCommand {
            line: "get logical-swtich".into(),
            suggestion: Some("get logical-switch".into()),
        };
        assert_eq!(
            e.to_string(),
            "Unknown command \"get logical-swtich\": did you mean \"get logical-switch\"?"
        );
        let e = Error::UnknownCommand {
            line: "xyzzy".into(),
            suggestion: None,
        };
        assert_eq!(
            e.to_string(),
            "Unknown command \"xyzzy\": type \"?\" or \"help\" for the commands"
        );
        assert_eq!(Error::Api("x".into()).exit_code(), EXIT_FAILED);
    }
}
