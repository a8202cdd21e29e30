//! `nsx-connrate`: the command (see `nsx-connrate --help`). Prints the report as
//! one JSON line on stdout; exits 2 on a usage error, 1 when it could not
//! run (failed connections are counted in the report, not an exit status).

use std::process::ExitCode;

use conn_rate::cli::{self, Command};
use conn_rate::{Error, client, server::Server};

fn main() -> ExitCode {
    let cmd = match cli::parse(std::env::args().skip(1)) {
        Ok(cmd) => cmd,
        Err(e) => {
            // clap's message: the error, the usage line, a pointer to --help.
            eprintln!("{}", e.to_string().trim_end());
            return ExitCode::from(2);
        }
    };
    match execute(cmd) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nsx-connrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cmd: Command) -> Result<String, Error> {
    match cmd {
        Command::Help => Ok(cli::help()),
        Command::Run(cfg) => client::run(&cfg).map(|r| r.to_json()),
        Command::Serve(cfg) => {
            let server = Server::start(cfg.addr, cfg.workers, cfg.io_timeout)?;
            eprintln!("nsx-connrate: listening on {}", server.local_addr());
            server
                .run_until(cfg.duration, cfg.max_conns)
                .map(|s| s.to_json())
        }
    }
}
