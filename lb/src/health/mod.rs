//! keepalived's health checkers (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`,
//! `MISC_CHECK`) for the real servers of [`control::lb::VirtualServer`]s,
//! with keepalived 2's semantics (`keepalived/check/check_{api,tcp,http,
//! misc}.c`, `check_data.c`).
//!
//! * [`schedule`]: one [`Checker`] per (virtual server, real server), pure:
//!   when the next probe is due, what it runs ([`ProbeSpec`]), and what its
//!   outcome does to the server's [`Liveness`] ([`Transition`]). Time is
//!   passed in.
//! * [`probe`]: runs one [`ProbeSpec`] (a connect, GETs, a script) through
//!   a [`Net`] that opens sockets and commands in the right network
//!   namespace ([`HostNet`]: this process's).
//! * [`monitor`]: the checkers of a set of virtual servers
//!   ([`Monitor::update`] keeps the state of those unchanged), and
//!   [`MonitorHandle::run`], the task that runs due probes concurrently and
//!   sends each change of standing as a [`HealthEvent`].
//!
//! # keepalived's behaviour kept here
//!
//! * Every checked server starts **up** (no `alpha`). The first check comes
//!   after a stagger within `delay_loop` (keepalived's default `warmup` is
//!   the delay loop, drawn at random; here drawn from a hash of the pair, so
//!   that it is the same on every run and spreads the checks of one real
//!   server over the loop).
//! * A check runs every `delay_loop` (the checker's, else the virtual
//!   server's, else [`control::lb::defaults::DELAY_LOOP`]). While a server is
//!   not down, a failed attempt is tried again after `delay_before_retry`,
//!   `retry` more times; when the last fails the server goes **down**: down
//!   after `retry + 1` failed attempts in a row. A down server is checked
//!   every `delay_loop` (HTTP: the larger of `delay_loop` and
//!   `delay_before_retry`), and one success brings it back up.
//! * The next check is timed from the end of a connect or GET check and
//!   from the start of a script (keepalived's `last_ran`).
//! * Defaults when the configuration leaves them out ([`defaults`]):
//!
//!   | checker | `retry` | `delay_before_retry` |
//!   |---|---|---|
//!   | `TCP_CHECK` | 1 | 1 s |
//!   | `HTTP_GET`, `SSL_GET` | 1 | 3 s |
//!   | `MISC_CHECK` | 0 | 1 s |
//!
//!   `connect_timeout` 5 s ([`control::lb::defaults::CONNECT_TIMEOUT`]);
//!   `misc_timeout`: the **virtual server's** `delay_loop`, as keepalived
//!   takes it. (keepalived 1's `nb_get_retry` for HTTP was 3; keepalived 2
//!   has 1 for every connect checker and 0 for scripts, which is what runs
//!   here.)
//! * `TCP_CHECK`: a connect to `connect_ip:connect_port` (default the real
//!   server's address and port) within `connect_timeout`.
//! * `HTTP_GET` / `SSL_GET`: for each url in turn, a new connection and a
//!   `GET path` with `Host:` the `virtualhost` or the target's `ip:port`,
//!   `User-Agent: KeepAliveClient`, as HTTP/1.1 with `Connection: close`
//!   (keepalived's `http_protocol 1.1`; its default is 1.0, which some
//!   virtual hosts refuse); the status must be one of `status_code`
//!   (none given: 200-299) and, with `digest`, the MD5 of the body must
//!   match. The connect and then the rest of the exchange (TLS handshake,
//!   request, answer) each get `connect_timeout`; an answer body is read up
//!   to [`probe::MAX_BODY`]. `SSL_GET` verifies no certificate (keepalived
//!   does not) and sends the `virtualhost` as SNI when it is a name. A
//!   retry fetches every url again (keepalived retries the failed url and
//!   goes on from there: the same verdicts, a few more requests).
//! * `MISC_CHECK`: `misc_path` split on whitespace into a program and its
//!   arguments, run with `misc_timeout`; at the timeout its process group is
//!   killed and the attempt failed. Exit 0 is success; with `misc_dynamic`,
//!   exit 2..=255 is success at weight `code - 2` ([`Liveness::Weight`]) and
//!   1 a failure; without it every other status fails. A change of that
//!   weight is a transition of its own.
//!
//! [`Liveness`]: control::lb::Liveness
//! [`Liveness::Weight`]: control::lb::Liveness::Weight

pub mod monitor;
pub mod probe;
pub mod schedule;

pub use monitor::{CheckView, HealthEvent, HealthKey, Monitor, MonitorHandle};
pub use probe::{HostNet, Net};
pub use schedule::{
    Checker, HttpProbe, MiscProbe, ProbeOutcome, ProbeSpec, Timing, Transition, defaults,
};
