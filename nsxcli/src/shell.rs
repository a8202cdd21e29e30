//! The I/O shell around the pure core: the backend (agent socket or
//! gateway HTTP), running one line (`-c`, or each line of the interactive
//! shell), and the interactive shell itself on rustyline (line editing,
//! history, Tab completion of commands and live names, `?`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::client::{Agent, Api};
use crate::error::{EXIT_FAILED, EXIT_OK, Error};
use crate::exec::{self, Outcome};
use crate::grammar::{self, ArgKind, Command, Mode, Names};
use crate::http::{Gateway, GwApi};
use crate::timefmt::Tz;

/// How long fetched names stay fresh for completion.
const NAMES_TTL: Duration = Duration::from_secs(10);

/// Where commands go.
#[derive(Debug, Clone)]
pub enum Backend {
    Agent(Agent),
    Gateway(Gateway),
}

impl Backend {
    /// The grammar mode of this backend.
    #[must_use]
    pub fn mode(&self) -> Mode {
        match self {
            Backend::Agent(_) => Mode::Agent,
            Backend::Gateway(_) => Mode::Gateway,
        }
    }

    /// Runs one parsed command.
    pub fn run(&mut self, p: &grammar::Parsed, tz: Tz) -> Result<Outcome, Error> {
        match self {
            Backend::Agent(a) => exec::agent(a, p, tz),
            Backend::Gateway(g) => exec::gateway(g, p, tz),
        }
    }

    /// Fails only if the agent/gateway cannot be reached at all (an API
    /// error still proves it is there).
    pub fn probe(&mut self) -> Result<(), Error> {
        let r = match self {
            Backend::Agent(a) => a.call(&agent_api::Request::Version),
            Backend::Gateway(g) => g.get("/api/v1/instances"),
        };
        match r {
            Err(e @ (Error::AgentUnreachable { .. } | Error::GatewayUnreachable { .. })) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Writes the outcome's file (if any) and prints its text.
pub fn deliver(o: &Outcome) -> Result<(), Error> {
    if let Some((path, bytes)) = &o.file {
        write_file(path, bytes)?;
    }
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error of the command.
    let _ = out.write_all(o.text.as_bytes());
    let _ = out.flush();
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| {
        Error::Failed(format!(
            "Cannot write {}: {}",
            path.display(),
            crate::error::io_reason(&e)
        ))
    })
}

/// Runs one line (`-c`, the arguments, or a line of the shell). Returns
/// `Ok(false)` for `exit`.
pub fn run_line(backend: &mut Backend, line: &str, json: bool, tz: Tz) -> Result<bool, Error> {
    let mode = backend.mode();
    if line.trim_end().ends_with('?') {
        print!("{}", grammar::question(mode, line)?);
        return Ok(true);
    }
    let Some(mut p) = grammar::parse(mode, line)? else {
        return Ok(true);
    };
    if p.command == Command::Exit {
        return Ok(false);
    }
    p.json |= json && !matches!(p.command, Command::Help(_));
    let o = backend.run(&p, tz)?;
    deliver(&o)?;
    Ok(true)
}

/// The rustyline helper: completion from the grammar and live names.
#[derive(Helper, Highlighter, Hinter, Validator)]
struct CliHelper {
    mode: Mode,
    agent: Option<RefCell<Agent>>,
    cache: RefCell<HashMap<ArgKind, (Instant, Vec<String>)>>,
}

impl Names for CliHelper {
    fn names(&self, kind: ArgKind) -> Vec<String> {
        let Some(agent) = &self.agent else {
            return Vec::new();
        };
        if let Ok(cache) = self.cache.try_borrow()
            && let Some((at, names)) = cache.get(&kind)
            && at.elapsed() < NAMES_TTL
        {
            return names.clone();
        }
        let Ok(mut a) = agent.try_borrow_mut() else {
            return Vec::new();
        };
        let names = exec::agent_names(&mut *a, kind);
        if let Ok(mut cache) = self.cache.try_borrow_mut() {
            cache.insert(kind, (Instant::now(), names.clone()));
        }
        names
    }
}

impl Completer for CliHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let left = line.get(..pos).unwrap_or(line);
        let (start, cands) = grammar::complete(self.mode, left, self);
        Ok((
            start,
            cands
                .into_iter()
                .map(|r| Pair {
                    display: r.trim_end().to_string(),
                    replacement: r,
                })
                .collect(),
        ))
    }
}

/// The history file: `$NSXCLI_HISTORY` (empty = none), else
/// `~/.nsxcli_history`.
#[must_use]
pub fn history_path() -> Option<PathBuf> {
    match std::env::var_os("NSXCLI_HISTORY") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".nsxcli_history")),
    }
}

/// The interactive shell; returns the exit code.
pub fn interactive(mut backend: Backend, prompt: &str, json: bool, tz: Tz) -> u8 {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .history_ignore_space(true)
        .auto_add_history(false)
        .build();
    let mut rl: Editor<CliHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("% Cannot start the line editor: {e}");
            return EXIT_FAILED;
        }
    };
    let agent = match &backend {
        Backend::Agent(a) => Some(RefCell::new(a.clone())),
        Backend::Gateway(_) => None,
    };
    rl.set_helper(Some(CliHelper {
        mode: backend.mode(),
        agent,
        cache: RefCell::new(HashMap::new()),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    // After `get ?` the next line starts as `get `, like a network device.
    let mut initial = String::new();
    loop {
        let read = if initial.is_empty() {
            rl.readline(prompt)
        } else {
            rl.readline_with_initial(prompt, (&std::mem::take(&mut initial), ""))
        };
        match read {
            Ok(line) => {
                let l = line.trim();
                if l.is_empty() {
                    continue;
                }
                if let Some(body) = l.strip_suffix('?') {
                    initial = body.to_string();
                }
                // A line typed with a leading space stays out of the history.
                if !line.starts_with(char::is_whitespace) {
                    let _ = rl.add_history_entry(l);
                }
                if let Some(h) = &history {
                    // Saved after every line: a killed shell keeps its history.
                    let _ = rl.save_history(h);
                }
                match run_line(&mut backend, l, json, tz) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => eprint!("{}", e.render()),
                }
                // Names may have changed (a capture, a new switch): refetch.
                if let Some(h) = rl.helper_mut() {
                    h.cache.get_mut().clear();
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("% {e}");
                return EXIT_FAILED;
            }
        }
    }
    EXIT_OK
}
