//! `nsxcli`: the operator's shell. Interactive (line editing, history, Tab
//! completion, `?`) with the prompt `<hostname>> `, or one command with
//! `-c "..."` (or as arguments). Talks to the local nsx-agent's socket, or
//! with `--gateway` to the gateway's admin API. Exit codes: 0 ok, 1 the
//! command failed, 2 usage, 3 agent/gateway not reachable.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use nsxcli::client::{Agent, DEFAULT_SOCKET};
use nsxcli::error::{EXIT_USAGE, Error};
use nsxcli::http::{self, DEFAULT_URL, Gateway};
use nsxcli::shell::{self, Backend};
use nsxcli::timefmt::Tz;

/// Default gateway directory (`admin.token`).
const DEFAULT_GATEWAY_DIR: &str = "/var/lib/nsx-gateway";

#[derive(Debug, Parser)]
#[command(
    name = "nsxcli",
    version,
    about = "The NSX overlay's operator shell: the local nsx-agent (or, with --gateway, the gateway)",
    after_help = "Without a command: an interactive shell (Tab completes, \"?\" lists what can follow, \"help\" lists the commands).\n\n\
Exit codes: 0 ok, 1 the command failed (API error, unknown name, file not written), 2 usage (unknown command, bad argument), 3 the agent (or gateway) is not reachable.\n\n\
Environment: NSXCLI_SOCKET (--socket), NSXCLI_GATEWAY_DIR (--dir), NSXCLI_HISTORY (history file, default ~/.nsxcli_history; empty: none)."
)]
struct Args {
    /// Run one command and exit (e.g. "get gateway connection status").
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    command: Option<String>,
    /// Print the API's JSON (get, trace, capture).
    #[arg(long)]
    json: bool,
    /// The agent's API socket [default: $NSXCLI_SOCKET, else /var/run/nsx-agent/nsxagent.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Talk to the gateway's admin API instead of the local agent.
    #[arg(long)]
    gateway: bool,
    /// Gateway directory holding admin.token [default: $NSXCLI_GATEWAY_DIR, else /var/lib/nsx-gateway].
    #[arg(long, value_name = "DIR", requires = "gateway")]
    dir: Option<PathBuf>,
    /// The gateway's admin API.
    #[arg(long, value_name = "URL", default_value = DEFAULT_URL, requires = "gateway")]
    url: String,
    /// The command as words (instead of -c).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<String>,
}

/// The box's host name (the prompt), as the kernel has it.
fn hostname() -> String {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_string();
        }
    }
    if let Some(h) = audited::hostname() {
        return h;
    }
    "nsxcli".to_string()
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn backend(args: &Args) -> Result<Backend, Error> {
    if !args.gateway {
        let socket = args
            .socket
            .clone()
            .unwrap_or_else(|| env_path("NSXCLI_SOCKET", DEFAULT_SOCKET));
        return Ok(Backend::Agent(Agent::new(socket)));
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| env_path("NSXCLI_GATEWAY_DIR", DEFAULT_GATEWAY_DIR));
    let token_path = dir.join("admin.token");
    let token = std::fs::read_to_string(&token_path).map_err(|e| Error::Usage {
        message: format!(
            "Cannot read the gateway's admin token {}: {}",
            token_path.display(),
            nsxcli::error::io_reason(&e)
        ),
        usage: vec!["nsxcli --gateway --dir <gateway dir> [--url http://127.0.0.1:8080]".into()],
    })?;
    let authority = http::authority(&args.url).map_err(|m| Error::Usage {
        message: m,
        usage: vec!["nsxcli --gateway --url http://HOST:PORT".into()],
    })?;
    Ok(Backend::Gateway(Gateway {
        url: args.url.clone(),
        authority,
        token: token.trim().to_string(),
        timeout: Duration::from_secs(10),
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let tz = Tz::Local;
    let mut backend = match backend(&args) {
        Ok(b) => b,
        Err(e) => {
            eprint!("{}", e.render());
            return ExitCode::from(e.exit_code());
        }
    };
    let line = match (&args.command, args.words.is_empty()) {
        (Some(_), false) => {
            eprintln!("% Give the command either with -c or as arguments, not both");
            return ExitCode::from(EXIT_USAGE);
        }
        (Some(c), true) => Some(c.clone()),
        (None, false) => Some(args.words.join(" ")),
        (None, true) => None,
    };
    if let Some(line) = line {
        return match shell::run_line(&mut backend, &line, args.json, tz) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprint!("{}", e.render());
                ExitCode::from(e.exit_code())
            }
        };
    }
    if let Err(e) = backend.probe() {
        eprint!("{}", e.render());
        return ExitCode::from(e.exit_code());
    }
    let prompt = match backend.mode() {
        nsxcli::grammar::Mode::Agent => format!("{}> ", hostname()),
        nsxcli::grammar::Mode::Gateway => format!("{}(gateway)> ", hostname()),
    };
    if !std::io::stdin().is_terminal() {
        // Commands from a pipe: no prompt, no editor; stop at the first
        // failure and report its exit code.
        return piped(&mut backend, args.json, tz);
    }
    ExitCode::from(shell::interactive(backend, &prompt, args.json, tz))
}

/// Runs the lines of a non-terminal stdin; the exit code of the first
/// failing line (0 if none).
fn piped(backend: &mut Backend, json: bool, tz: Tz) -> ExitCode {
    let mut code = 0u8;
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        match shell::run_line(backend, &line, json, tz) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                eprint!("{}", e.render());
                if code == 0 {
                    code = e.exit_code();
                }
            }
        }
    }
    ExitCode::from(code)
}
