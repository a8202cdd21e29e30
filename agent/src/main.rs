//! `nsx-agent`: the per-instance overlay agent.
//!
//! `nsx-agent run --config FILE` takes the instance's NIC, builds the
//! overlay interface and runs the datapath until SIGTERM (SIGHUP reloads the
//! config); `check` validates a config without touching the host; `ctl`
//! queries a running agent's local API.

#![forbid(unsafe_code)]

use agent::{api, config, run};

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nsx-agent",
    version,
    about = "Overlay agent: Geneve datapath for one instance"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Take the NIC and run the datapath until SIGTERM (SIGHUP reloads the config).
    Run {
        #[arg(long, short, default_value = "/etc/nsx-agent/agent.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem; changes nothing.
    Check {
        #[arg(long, short, default_value = "/etc/nsx-agent/agent.toml")]
        config: PathBuf,
    },
    /// Restore the host from a saved state after a crash, without starting.
    Cleanup {
        #[arg(long, short, default_value = "/etc/nsx-agent/agent.toml")]
        config: PathBuf,
    },
    /// Ask a running agent (status, counters, config, mac-table); prints JSON.
    Ctl {
        #[arg(long, short, default_value = "/var/run/nsx-agent/nsxagent.sock")]
        socket: PathBuf,
        command: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NSX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => run::run(&config),
        Cmd::Cleanup { config } => run::cleanup(&config),
        Cmd::Check { config } => match config::AgentConfig::load(&config) {
            Ok(cfg) => {
                match (&cfg.instance, &cfg.gateway) {
                    (Some(i), _) => println!(
                        "{}: ok (version {}, {} switches, {} routers, {} remote ports, {})",
                        config.display(),
                        i.version,
                        i.switches.len(),
                        i.routers.len(),
                        i.remote_ports.len(),
                        match &i.firewall {
                            Some(fw) => format!(
                                "firewall: {} rules",
                                fw.rulesets.iter().map(|r| r.rules.len()).sum::<usize>()
                                    + fw.l2_rulesets.iter().map(|r| r.rules.len()).sum::<usize>()
                                    + 1
                            ),
                            None => "no firewall".into(),
                        }
                    ),
                    (None, Some(g)) => println!(
                        "{}: ok (desired state from the gateway at {})",
                        config.display(),
                        g.control
                    ),
                    (None, None) => println!("{}: ok", config.display()),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ctl { socket, command } => ctl(&socket, &command),
    }
}

fn ctl(socket: &std::path::Path, command: &str) -> ExitCode {
    // The request is checked here as the agent would check it, so a typo
    // gets the agent's own message without a round trip.
    let asked = serde_json::json!({ "api_version": api::API_VERSION, "cmd": command });
    let req = match agent_api::parse_request(&asked.to_string()) {
        Ok(r) => r,
        Err(e) => return ctl_print(&agent_api::encode_error(&e.0), socket),
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{}\n", agent_api::encode_request(&req)).as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(line) => ctl_print(&line, socket),
        Err(e) => {
            eprintln!(
                "nsx-agent ctl: cannot reach the agent at {}: {e} (is nsx-agent running?)",
                socket.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints a reply line: a text view (getrules, getflows, ...) as the seed
/// shows it, anything else as pretty JSON; an error reply fails.
fn ctl_print(line: &str, socket: &std::path::Path) -> ExitCode {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => {
            let failed = v.get("error").is_some();
            let text = match agent_api::decode::<agent_api::TextReply>(&v) {
                Ok(t) if !failed => t.text.trim_end().to_string(),
                _ => serde_json::to_string_pretty(&v).unwrap_or_else(|_| line.to_string()),
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{text}");
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("nsx-agent ctl: bad reply from {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}
