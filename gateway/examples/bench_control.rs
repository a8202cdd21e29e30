//! Control-plane benchmark (issue 4, "Performance (benchmark)"): N simulated
//! agents against one running `nsx-gateway serve`, everything on loopback
//! with the real protocol stack (HTTPS enrollment, mutual TLS 1.3 control
//! channel, `control::AgentSession`). Driven by `scripts/bench-control.sh`,
//! which sets the gateway up; run by hand:
//!
//! ```text
//! cargo run --release -p gateway --example bench_control -- \
//!     --dir D --gw-pid PID --agents 1000 \
//!     --enroll 127.0.0.1:P1 --api 127.0.0.1:P2 --control 127.0.0.1:P3 [--name nsx-gw.test]
//!     [--rounds 3] [--enroll-concurrency 8] [--settle-ms 1500] [--timeout-s 120]
//! ```
//!
//! The desired state must hold a switch tagged `bench-a` attached to a
//! router (the one whose routes the fan-out changes) and a switch tagged
//! `bench-b` that is not on that router; instances alternate between the two
//! tags. Phases:
//!
//! 1. enroll N instances through `POST /api/v1/enroll` (each its own P-256
//!    key and CSR, distinct underlay IP and MAC), `--enroll-concurrency` at a
//!    time;
//! 2. gateway RSS (`/proc/PID/status` VmRSS) before any session;
//! 3. start N control clients at once (the agent's own,
//!    `agent::gw::gwclient::run`: TLS 1.3 with the client certificate, an
//!    `AgentSession`, every `Apply` answered `applied(v, Ok(()))` at once,
//!    heartbeats from `next_timeout`, redial with the agent's backoff on any
//!    close) and measure the time until every client has acked its snapshot
//!    (converge); check on the gateway (`GET /api/v1/instances`) that every
//!    instance is ESTABLISHED with that version acked;
//! 4. RSS again after `--settle-ms`: per agent = (after - before) / N;
//! 5. `--rounds` times: one switch change (`PUT /api/v1/state` adding or
//!    removing a static route on the router of switch `bench-a`), and per
//!    affected agent (those on `bench-a`) the time from just before the PUT
//!    until that agent acked the new version (also, separately, from the PUT
//!    response); agents on `bench-b` must receive nothing.
//!
//! Output: a human summary on stderr and one `RESULT key=value ...` line on
//! stdout for the script.
//!
//! `--probe-store DB` (no gateway needed; use a COPY of a populated
//! `gateway.db`, e.g. one kept with `KEEP=1 scripts/bench-control.sh`): times
//! the store calls the control server makes per session, to attribute the
//! per-change cost (`STORE key=value ...`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agent::config::GatewaySettings;
use agent::dp::ctl::Published;
use agent::gw::enroll::{self as agent_enroll, Endpoint};
use agent::gw::gwclient::{self, ApplyRequest, GatewayStatus};
use control::framing;
use control::proto::GatewayMsg;
use control::{InstanceMeta, MacAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Args {
    dir: PathBuf,
    gw_pid: u32,
    agents: usize,
    enroll: SocketAddr,
    api: SocketAddr,
    control: SocketAddr,
    name: String,
    rounds: usize,
    enroll_concurrency: usize,
    settle: Duration,
    timeout: Duration,
}

fn parse_args() -> Result<Args, Error> {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(key) = k.strip_prefix("--") else {
            return Err(format!("unexpected argument {k:?}").into());
        };
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        m.insert(key.to_string(), v);
    }
    let get = |k: &str| -> Result<String, Error> {
        m.get(k)
            .cloned()
            .ok_or_else(|| format!("missing --{k}").into())
    };
    let opt = |k: &str, d: &str| m.get(k).cloned().unwrap_or_else(|| d.to_string());
    Ok(Args {
        dir: PathBuf::from(get("dir")?),
        gw_pid: get("gw-pid")?.parse()?,
        agents: get("agents")?.parse()?,
        enroll: get("enroll")?.parse()?,
        api: get("api")?.parse()?,
        control: get("control")?.parse()?,
        name: opt("name", "nsx-gw.test"),
        rounds: opt("rounds", "3").parse()?,
        enroll_concurrency: opt("enroll-concurrency", "8").parse()?,
        settle: Duration::from_millis(opt("settle-ms", "1500").parse()?),
        timeout: Duration::from_secs(opt("timeout-s", "120").parse()?),
    })
}

/// One enrolled simulated instance.
#[derive(Debug)]
struct Enrolled {
    meta: InstanceMeta,
    key_pem: String,
    cert_pem: String,
    /// On the switch whose router the fan-out changes.
    on_a: bool,
}

/// What the clients tell the coordinator.
#[derive(Debug)]
enum Event {
    /// Agent `idx` acked `version` (the Ack frame was written and flushed).
    Acked {
        idx: usize,
        version: u64,
        at: Instant,
    },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rss_kb(pid: u32) -> Result<u64, Error> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return Ok(kb.parse()?);
        }
    }
    Err("no VmRSS in /proc/PID/status".into())
}

/// CPU time (user + system) of a process in ms, from /proc/PID/stat.
fn cpu_ms(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let Some((_, rest)) = s.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // rest[0] is field 3, so field k is rest[k - 3]; USER_HZ is 100 on Linux.
    (tick(11) + tick(12)) * 10.0
}

fn meta_for(i: usize) -> (InstanceMeta, bool) {
    let on_a = i.is_multiple_of(2);
    let tag = if on_a { "bench-a" } else { "bench-b" };
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    // 10.1.0.1, 10.1.0.2, ... (never .0 or .255 in the last octet).
    let host = 256 + (n / 250) * 256 + (n % 250) + 1;
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + host);
    let b = n.to_be_bytes();
    let mac = MacAddr([0x06, 0x00, b[0], b[1], b[2], b[3]]);
    let meta = InstanceMeta {
        instance_id: format!("i-bench{i:05}"),
        hostname: format!("bench-{i}"),
        os: "debian-12".into(),
        image_id: "ami-bench".into(),
        tags: BTreeMap::from([("nsx:network".to_string(), tag.to_string())]),
        underlay_ip: ip,
        nic_mac: mac,
    };
    (meta, on_a)
}

async fn enroll_one(
    args: &Args,
    bootstrap_pem: &str,
    ca_pem: &str,
    i: usize,
) -> Result<Enrolled, Error> {
    let (meta, on_a) = meta_for(i);
    // The agent's own enrollment: key, CSR, signed body, HTTPS post.
    let (key_pem, csr_pem) = agent_enroll::new_key_and_csr()?;
    let body = agent_enroll::build_request(
        bootstrap_pem.as_bytes(),
        &args.dir.join("bootstrap.key"),
        &csr_pem,
        &meta,
        control::proto::Role::Instance,
        now_unix(),
        &agent_enroll::new_nonce()?,
    )?;
    let addr = args.enroll.to_string();
    let ca_path = args.dir.join("ca.pem");
    let endpoint = Endpoint {
        addr: &addr,
        server_name: &args.name,
        ca_pem: ca_pem.as_bytes(),
        ca_path: &ca_path,
    };
    let resp = agent_enroll::submit(&endpoint, &body).await?;
    if resp.instance_id != meta.instance_id {
        return Err(format!(
            "enrolled as {:?}, asked {:?}",
            resp.instance_id, meta.instance_id
        )
        .into());
    }
    Ok(Enrolled {
        meta,
        key_pem,
        cert_pem: resp.certificate_pem,
        on_a,
    })
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    applies: AtomicU64,
}

/// One simulated agent: the agent's own control client
/// (`agent::gw::gwclient::run`: dial, TLS 1.3 with the client certificate,
/// `AgentSession`, heartbeats, status reports, redial with the agent's
/// backoff), with every config answered applied at once; the answer is the
/// `Acked` event (the client writes the Ack right after it). Returns the
/// status the client publishes.
fn spawn_agent(
    tasks: &mut tokio::task::JoinSet<()>,
    idx: usize,
    settings: GatewaySettings,
    tls: Arc<rustls::ClientConfig>,
    meta: InstanceMeta,
    events: mpsc::UnboundedSender<Event>,
    counters: Arc<Counters>,
) -> Arc<Mutex<Option<GatewayStatus>>> {
    let (apply_tx, mut apply_rx) = mpsc::channel::<ApplyRequest>(4);
    let status = Arc::new(Mutex::new(None));
    let published = Arc::new(Mutex::new(Published::default()));
    tasks.spawn(gwclient::run(
        settings,
        tls,
        meta,
        None,
        apply_tx,
        status.clone(),
        published,
        Default::default(),
    ));
    tasks.spawn(async move {
        while let Some(req) = apply_rx.recv().await {
            counters.applies.fetch_add(1, Ordering::Relaxed);
            let version = req.version;
            if req.reply.send(Ok(())).is_ok() {
                let _ = events.send(Event::Acked {
                    idx,
                    version,
                    at: Instant::now(),
                });
            }
        }
    });
    status
}

/// Counts the clients' connects and failed dials from the status they
/// publish (a redial waits at least 250 ms in CLOSED, so a 50 ms poll sees
/// every transition), until aborted.
async fn count_sessions(statuses: Vec<Arc<Mutex<Option<GatewayStatus>>>>, counters: Arc<Counters>) {
    let mut last: Vec<String> = vec![String::new(); statuses.len()];
    loop {
        for (s, prev) in statuses.iter().zip(last.iter_mut()) {
            let Some(state) = s
                .lock()
                .ok()
                .and_then(|g| g.as_ref().map(|g| g.state.clone()))
            else {
                continue;
            };
            if state == *prev {
                continue;
            }
            match (prev.as_str(), state.as_str()) {
                (_, "ESTABLISHED") => {
                    counters.connects.fetch_add(1, Ordering::Relaxed);
                }
                ("CONNECTING" | "HELLO_SENT", "CLOSED") => {
                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            *prev = state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One plain-HTTP request to the loopback admin API (`Connection: close`).
async fn admin(
    api: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), Error> {
    let fut = async {
        let mut tcp = TcpStream::connect(api).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        tcp.read_to_end(&mut resp).await?;
        Ok::<_, Error>(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| format!("{method} {path}: timed out"))??;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no header terminator"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line"))?;
    Ok((status, body.to_string()))
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the rank is within 0..=len for a percentage p (and float casts saturate)"
)]
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Debug)]
struct Tracker {
    /// Newest version each agent acked.
    acked: Vec<Option<u64>>,
    /// When each agent first acked a version >= `target[idx]`.
    reached: Vec<Option<Instant>>,
    target: Vec<Option<u64>>,
    pending: usize,
    /// Acks seen for agents that had no target (unexpected pushes).
    stray: usize,
}

impl Tracker {
    fn new(n: usize) -> Self {
        Tracker {
            acked: vec![None; n],
            reached: vec![None; n],
            target: vec![None; n],
            pending: 0,
            stray: 0,
        }
    }

    fn on_event(&mut self, ev: Event) {
        let Event::Acked { idx, version, at } = ev;
        let prev = self.acked[idx].replace(version);
        match self.target[idx] {
            Some(t) if version >= t && self.reached[idx].is_none() => {
                self.reached[idx] = Some(at);
                self.pending -= 1;
            }
            Some(_) => {}
            // A NEW version for an agent the change does not affect (re-acks
            // of the same version after a reconnect do not count).
            None if prev.is_none_or(|p| version > p) => self.stray += 1,
            None => {}
        }
    }

    /// `targets[i] = None`: agent i must not receive anything.
    fn arm(&mut self, targets: Vec<Option<u64>>) {
        self.pending = targets.iter().filter(|t| t.is_some()).count();
        self.reached = vec![None; targets.len()];
        self.target = targets;
        self.stray = 0;
    }

    async fn wait(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>, deadline: Instant) -> bool {
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(ev)) => self.on_event(ev),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let n = args.agents;
    let read = |f: &str| std::fs::read_to_string(args.dir.join(f));
    let ca_pem = read("ca.pem")?;
    let bootstrap_pem = read("bootstrap.key")?;
    let token = read("admin.token")?.trim().to_string();

    // 1. Enrollment.
    eprintln!(
        "bench: enrolling {n} instances ({} at a time)...",
        args.enroll_concurrency
    );
    let t_enroll = Instant::now();
    let sem = Arc::new(Semaphore::new(args.enroll_concurrency.max(1)));
    let shared = Arc::new((args.clone(), bootstrap_pem, ca_pem.clone()));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let shared = shared.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let (a, b, c) = &*shared;
            enroll_one(a, b, c, i).await
        }));
    }
    let mut agents = Vec::with_capacity(n);
    for (i, h) in handles.into_iter().enumerate() {
        agents.push(
            h.await?
                .map_err(|e| format!("enrolling instance {i}: {e}"))?,
        );
    }
    let enroll_s = t_enroll.elapsed().as_secs_f64();
    eprintln!(
        "bench: enrolled {n} in {enroll_s:.1} s ({:.0}/s)",
        n as f64 / enroll_s
    );

    // Versions the gateway will push (and a check of the placement).
    let mut expected = Vec::with_capacity(n);
    for a in &agents {
        let (st, body) = admin(
            args.api,
            &token,
            "GET",
            &format!("/api/v1/instances/{}/config", a.meta.instance_id),
            "",
        )
        .await?;
        if st != 200 {
            return Err(format!("config of {}: {st} {body}", a.meta.instance_id).into());
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        if v["config"]["port"].is_null() {
            return Err(format!("{} has no overlay port: {body}", a.meta.instance_id).into());
        }
        expected.push(v["version"].as_u64().ok_or("config without version")?);
    }
    let cfg_bytes = {
        let (_, body) = admin(
            args.api,
            &token,
            "GET",
            &format!("/api/v1/instances/{}/config", agents[0].meta.instance_id),
            "",
        )
        .await?;
        body.len()
    };

    // 2. RSS before the sessions (after enrollment, allocator warmed).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kb(args.gw_pid)?;

    // 3. N concurrent control clients.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let settings = GatewaySettings {
        control: args.control.to_string(),
        enroll: args.enroll.to_string(),
        server_name: args.name.clone(),
        ca: args.dir.join("ca.pem"),
        bootstrap_key: args.dir.join("bootstrap.key"),
        instance_id: None,
        image_id: None,
        tags: BTreeMap::new(),
    };
    let mut tlss = Vec::with_capacity(n);
    for a in &agents {
        tlss.push(Arc::new(gwclient::client_tls(
            ca_pem.as_bytes(),
            a.cert_pem.as_bytes(),
            a.key_pem.as_bytes(),
        )?));
    }
    let mut tracker = Tracker::new(n);
    tracker.arm(expected.iter().map(|v| Some(*v)).collect());
    eprintln!("bench: starting {n} control sessions...");
    let gw_pid = args.gw_pid.to_string();
    let (gw_cpu0, me_cpu0) = (cpu_ms(&gw_pid), cpu_ms("self"));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut statuses = Vec::with_capacity(n);
    for (idx, (a, tls)) in agents.iter().zip(tlss).enumerate() {
        statuses.push(spawn_agent(
            &mut tasks,
            idx,
            settings.clone(),
            tls,
            a.meta.clone(),
            ev_tx.clone(),
            counters.clone(),
        ));
    }
    tasks.spawn(count_sessions(statuses, counters.clone()));
    drop(ev_tx);
    let ok = tracker.wait(&mut ev_rx, t0 + args.timeout).await;
    let converge = t0.elapsed();
    if !ok {
        return Err(format!(
            "converge: {} of {n} agents had not acked after {:?}",
            tracker.pending, args.timeout
        )
        .into());
    }
    let last = tracker
        .reached
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(t0);
    let converge_ms = ms(last.duration_since(t0));
    let (gw_cpu_conv, me_cpu_conv) = (cpu_ms(&gw_pid) - gw_cpu0, cpu_ms("self") - me_cpu0);
    let mut conv: Vec<f64> = tracker
        .reached
        .iter()
        .flatten()
        .map(|t| ms(t.duration_since(t0)))
        .collect();
    conv.sort_by(f64::total_cmp);
    eprintln!(
        "bench: converged: all {n} acked in {converge_ms:.0} ms (p50 {:.0} ms; waited {:.0} ms); \
         CPU: gateway {gw_cpu_conv:.0} ms, bench clients {me_cpu_conv:.0} ms",
        pct(&conv, 50.0),
        ms(converge)
    );

    // Gateway side: every instance ESTABLISHED with its version acked.
    let settle_until = Instant::now() + args.settle;
    let mut gw_ok = 0usize;
    let mut gw_check_ms = 0.0;
    let tcheck = Instant::now();
    for _ in 0..50 {
        let (st, body) = admin(args.api, &token, "GET", "/api/v1/instances", "").await?;
        if st != 200 {
            return Err(format!("GET instances: {st}").into());
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let list = v
            .as_array()
            .or_else(|| v["instances"].as_array())
            .cloned()
            .unwrap_or_default();
        let ids: BTreeMap<&str, u64> = agents
            .iter()
            .zip(&expected)
            .map(|(a, e)| (a.meta.instance_id.as_str(), *e))
            .collect();
        gw_ok = list
            .iter()
            .filter(|r| {
                let id = r["id"].as_str().unwrap_or_default();
                r["session"].as_str() == Some("ESTABLISHED")
                    && ids
                        .get(id)
                        .is_some_and(|e| r["acked_version"].as_u64() == Some(*e))
            })
            .count();
        if gw_ok == n {
            gw_check_ms = ms(tcheck.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "bench: gateway inventory: {gw_ok}/{n} ESTABLISHED with the version acked (+{gw_check_ms:.0} ms after the last ack)"
    );

    // 4. RSS with N live sessions.
    tokio::time::sleep(settle_until.saturating_duration_since(Instant::now())).await;
    let rss_after = rss_kb(args.gw_pid)?;
    let per_agent_kb = (rss_after as f64 - rss_before as f64) / n as f64;
    eprintln!(
        "bench: gateway RSS {rss_before} kB -> {rss_after} kB: {per_agent_kb:.1} kB per agent"
    );

    // 5. Fan-out: one switch change, `rounds` times.
    let (st, body) = admin(args.api, &token, "GET", "/api/v1/state", "").await?;
    if st != 200 {
        return Err(format!("GET state: {st} {body}").into());
    }
    let base: serde_json::Value = serde_json::from_str(&body)?;
    let state = base["state"].clone();
    let on_a: Vec<bool> = agents.iter().map(|a| a.on_a).collect();
    let affected = on_a.iter().filter(|x| **x).count();
    let mut lat_put: Vec<f64> = Vec::new();
    let mut lat_resp: Vec<f64> = Vec::new();
    let mut round_max: Vec<f64> = Vec::new();
    let mut put_ms: Vec<f64> = Vec::new();
    let mut stray_total = 0usize;
    let mut gw_cpu_round: Vec<f64> = Vec::new();
    for round in 0..args.rounds {
        let mut st = state.clone();
        let routes = st["routers"][0]["routes"]
            .as_array_mut()
            .ok_or("state has no routers[0].routes")?;
        // Alternate: add a route / remove it again (each is a change).
        if round % 2 == 0 {
            routes.push(serde_json::json!({
                "prefix": format!("10.{}.0.0/16", 100 + round),
                "next_hop": st_next_hop(&state)?,
            }));
        }
        let body = serde_json::to_string(&st)?;
        // Let heartbeats etc. from the previous round drain.
        while let Ok(ev) = ev_rx.try_recv() {
            tracker.on_event(ev);
        }
        let (gcpu, mcpu) = (cpu_ms(&gw_pid), cpu_ms("self"));
        let tput = Instant::now();
        let (code, resp) = admin(args.api, &token, "PUT", "/api/v1/state", &body).await?;
        let tresp = Instant::now();
        if code != 200 {
            return Err(format!("PUT state: {code} {resp}").into());
        }
        let out: serde_json::Value = serde_json::from_str(&resp)?;
        let version = out["version"].as_u64().ok_or("PUT without version")?;
        if out["changed"].as_bool() != Some(true) {
            return Err(format!("PUT changed nothing: {resp}").into());
        }
        tracker.arm(on_a.iter().map(|a| a.then_some(version)).collect());
        let ok = tracker.wait(&mut ev_rx, tput + args.timeout).await;
        if !ok {
            return Err(format!(
                "fan-out round {round}: {} of {affected} affected agents had not acked v{version} after {:?}",
                tracker.pending, args.timeout
            )
            .into());
        }
        // Catch stray updates to unaffected agents for a moment longer.
        let grace = Instant::now() + Duration::from_millis(300);
        while let Ok(Some(ev)) = tokio::time::timeout(
            grace.saturating_duration_since(Instant::now()),
            ev_rx.recv(),
        )
        .await
        {
            tracker.on_event(ev);
        }
        stray_total += tracker.stray;
        let (gcpu, mcpu) = (cpu_ms(&gw_pid) - gcpu, cpu_ms("self") - mcpu);
        gw_cpu_round.push(gcpu);
        let mut rmax: f64 = 0.0;
        for t in tracker.reached.iter().flatten() {
            let a = ms(t.duration_since(tput));
            rmax = rmax.max(a);
            lat_put.push(a);
            lat_resp.push(ms(t.saturating_duration_since(tresp)));
        }
        round_max.push(rmax);
        put_ms.push(ms(tresp.duration_since(tput)));
        eprintln!(
            "bench: fan-out round {round}: v{version} acked by {affected} agents, last after {rmax:.0} ms (PUT took {:.0} ms); \
             {} unaffected agents got a new version; CPU (incl. 300 ms grace): gateway {gcpu:.0} ms, bench clients {mcpu:.0} ms",
            ms(tresp.duration_since(tput)),
            tracker.stray
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    lat_put.sort_by(f64::total_cmp);
    lat_resp.sort_by(f64::total_cmp);
    let rss_end = rss_kb(args.gw_pid)?;

    // The clients run until dropped, as in the agent.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let c = &counters;
    let reconnects = c.connects.load(Ordering::Relaxed).saturating_sub(n as u64);
    eprintln!(
        "bench: sessions: {} connects ({} reconnects), {} connect failures, {} applies",
        c.connects.load(Ordering::Relaxed),
        reconnects,
        c.connect_failures.load(Ordering::Relaxed),
        c.applies.load(Ordering::Relaxed)
    );
    println!(
        "RESULT agents={n} enroll_s={enroll_s:.1} converge_ms={converge_ms:.0} converge_p50_ms={:.0} gw_acked={gw_ok} \
         rss_before_kb={rss_before} rss_after_kb={rss_after} rss_end_kb={rss_end} rss_per_agent_kb={per_agent_kb:.1} \
         affected={affected} rounds={} fanout_p50_ms={:.0} fanout_p99_ms={:.0} fanout_max_ms={:.0} \
         fanout_resp_p50_ms={:.0} fanout_resp_p99_ms={:.0} put_ms={:.0} stray={stray_total} \
         reconnects={reconnects} connect_failures={} config_bytes={cfg_bytes} \
         gw_cpu_converge_ms={gw_cpu_conv:.0} bench_cpu_converge_ms={me_cpu_conv:.0} gw_cpu_per_change_ms={:.0}",
        pct(&conv, 50.0),
        args.rounds,
        pct(&lat_put, 50.0),
        pct(&lat_put, 99.0),
        lat_put.last().copied().unwrap_or(f64::NAN),
        pct(&lat_resp, 50.0),
        pct(&lat_resp, 99.0),
        put_ms.iter().copied().fold(0.0, f64::max),
        c.connect_failures.load(Ordering::Relaxed),
        gw_cpu_round.iter().sum::<f64>() / gw_cpu_round.len().max(1) as f64,
    );
    Ok(())
}

/// A next hop on the router's first attached switch: the subnet's last
/// usable address (IPAM hands out the lowest free ones).
fn st_next_hop(state: &serde_json::Value) -> Result<String, Error> {
    let sw_name = state["routers"][0]["switches"][0]
        .as_str()
        .ok_or("routers[0] has no switch")?;
    let sw = state["switches"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"].as_str() == Some(sw_name)))
        .ok_or("router switch not found")?;
    let subnet: ipnet::Ipv4Net = sw["subnet"].as_str().ok_or("no subnet")?.parse()?;
    let last = u32::from(subnet.broadcast()) - 1;
    Ok(Ipv4Addr::from(last).to_string())
}

/// `--probe-store DB`: the per-session store calls of the control server,
/// timed on a populated store.
fn probe_store(db: &str) -> Result<(), Error> {
    use gateway::store::Store;
    let mut store = Store::open(std::path::Path::new(db))?;
    let ids: Vec<String> = store.instances()?.into_iter().map(|r| r.id).collect();
    let n = ids.len();
    if n == 0 {
        return Err("the store has no instances".into());
    }
    let each = |d: Duration| ms(d) / n as f64;
    let t = Instant::now();
    for _ in &ids {
        store.instances()?;
    }
    let all_rows = each(t.elapsed());
    let t = Instant::now();
    for id in &ids {
        store.instance(id)?;
    }
    let one_row = each(t.elapsed());
    // Unchanged configs (the common case of a notification).
    store.desired_config_for(&ids[0])?;
    let t = Instant::now();
    let mut bytes = 0usize;
    for id in &ids {
        let (_, cfg) = store.desired_config_for(id)?;
        bytes = bytes.max(serde_json::to_string(&cfg)?.len());
    }
    let desired = each(t.elapsed());
    let mut cfgs = Vec::with_capacity(n);
    for id in &ids {
        cfgs.push(store.desired_config_for(id)?);
    }
    let t = Instant::now();
    for (version, config) in cfgs {
        framing::encode(&GatewayMsg::Snapshot { version, config })?;
    }
    let desired_encode = each(t.elapsed());
    let t = Instant::now();
    for id in &ids {
        store.record_session(id, None, Some(1), None, now_unix())?;
    }
    let record = each(t.elapsed());
    eprintln!(
        "store ({n} instances): instances() {all_rows:.3} ms, instance(id) {one_row:.3} ms, \
         desired_config_for {desired:.3} ms, + frame encode {desired_encode:.3} ms, \
         record_session {record:.3} ms (per call); largest config {bytes} B"
    );
    eprintln!(
        "store: one change notification costs the control server about {:.0} ms of store-lock time \
         ({n} x (is_revoked + desired_config_for)) before the first byte of the fan-out can leave",
        n as f64 * (one_row + desired)
    );
    println!(
        "STORE instances={n} all_rows_ms={all_rows:.3} one_row_ms={one_row:.3} desired_ms={desired:.3} \
         encode_ms={desired_encode:.3} record_session_ms={record:.3} config_bytes={bytes}"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--probe-store") {
        let Some(db) = argv.get(2) else {
            eprintln!("bench_control: --probe-store DB");
            return std::process::ExitCode::from(2);
        };
        return match probe_store(db) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench_control: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_control: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_control: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_control: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
