//! The edge's health verdicts through a serving gateway (issue 15): over
//! the real enrollment listener and control channel (mutual TLS), the edge
//! sends `Health` reports and every agent balancing the virtual server
//! gets a config whose `live` carries them; reports from anyone else and
//! verdicts on servers the state does not check change nothing; the
//! verdicts outlive the edge's session; the admin API and the metrics show
//! them; the edge's own config lists what it checks.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use control::lb::{HealthKey, HealthReport, HealthVerdict, LbProtocol, LbService, Liveness};
use control::proto::{InstanceMeta, Role};
use control::{AgentMsg, Decoder, GatewayMsg, InstanceConfig, encode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::{Fixture, NAME};

/// A distributed virtual server with two checked real servers (a TCP
/// connect and a dynamic-weight script), and one without checkers.
const STATE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0x2388, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls, app-ls]}
tier0:
  uplink: {address: 203.0.113.2/24, secondary: [203.0.113.10], gateway: 203.0.113.1}
load_balancers:
  - vip: 10.64.1.2
    port: 10000
    scheduler: rr
    persistence_timeout: 10
    real_servers:
      - {ip: 192.168.1.100, port: 8089, check: {type: tcp}}
      - {ip: 192.168.1.101, port: 18089, check: {type: misc, path: /usr/local/bin/weight, dynamic: true}}
  - {vip: 10.64.1.3, port: 80, scheduler: sh, real_servers: [{ip: 192.168.99.30, port: 80}]}
"#;

const VS: &str = "TCP 10.64.1.2:10000";

/// The promise: a verdict reaches every agent within 1 s (about 10 ms
/// here on a debug build).
const VERDICT_BOUND: Duration = Duration::from_secs(1);

/// How long to wait for something that must happen, however loaded the
/// machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long nothing must happen for "nothing changed".
const QUIET: Duration = Duration::from_millis(700);

/// The key of `real_ip:real_port` behind `vip:port` (TCP).
fn key(vip: &str, port: u16, real_ip: &str, real_port: u16) -> HealthKey {
    HealthKey {
        protocol: LbProtocol::Tcp,
        vip: vip.parse().expect("ip"),
        port,
        real_ip: real_ip.parse().expect("ip"),
        real_port,
    }
}

fn rs100() -> HealthKey {
    key("10.64.1.2", 10000, "192.168.1.100", 8089)
}

fn rs101() -> HealthKey {
    key("10.64.1.2", 10000, "192.168.1.101", 18089)
}

fn report(full: bool, verdicts: &[(HealthKey, Liveness)]) -> AgentMsg {
    AgentMsg::Health(HealthReport {
        full,
        verdicts: verdicts
            .iter()
            .map(|&(key, liveness)| HealthVerdict {
                key,
                liveness,
                reason: format!("{liveness:?} by the test"),
            })
            .collect(),
    })
}

/// An agent over the control channel written by hand, so it can send
/// `Health`: it acks every config it gets and passes it on, sends
/// heartbeats, and writes what it is given.
struct Agent {
    configs: mpsc::UnboundedReceiver<(u64, Option<InstanceConfig>)>,
    out: mpsc::UnboundedSender<AgentMsg>,
    task: JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Agent {
    /// Connects with `cert` and `key` (PEM) and says Hello as `m`.
    async fn connect(
        f: &Fixture,
        control: std::net::SocketAddr,
        m: InstanceMeta,
        cert: &str,
        key: &str,
    ) -> Agent {
        let tls = common::agent_tls(f, cert, key);
        let tcp = TcpStream::connect(control).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay, as the agent's");
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from(NAME).expect("name"), tcp)
            .await
            .expect("control TLS handshake");
        let hello = common::hello_frame(m);
        stream.write_all(&hello).await.expect("hello");
        let (configs_tx, configs) = mpsc::unbounded_channel();
        let (out, mut to_send) = mpsc::unbounded_channel::<AgentMsg>();
        let task = tokio::spawn(async move {
            let mut dec = Decoder::<GatewayMsg>::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut beat = tokio::time::interval(Duration::from_millis(300));
            let mut seq = 0;
            loop {
                let msg = tokio::select! {
                    n = stream.read(&mut buf) => {
                        match n {
                            Ok(n) if n > 0 => dec.push(&buf[..n]),
                            _ => return,
                        }
                        while let Ok(Some(m)) = dec.next() {
                            let (version, config) = match m {
                                GatewayMsg::Snapshot { version, config }
                                | GatewayMsg::Update { version, config, .. } => (version, config),
                                GatewayMsg::Reject { reason } => panic!("rejected: {reason}"),
                                _ => continue,
                            };
                            let ack = encode(&AgentMsg::Ack { version }).expect("encode");
                            stream.write_all(&ack).await.expect("ack");
                            let _ = configs_tx.send((version, config));
                        }
                        continue;
                    }
                    m = to_send.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                    _ = beat.tick() => {
                        seq += 1;
                        AgentMsg::Heartbeat { seq }
                    }
                };
                let frame = encode(&msg).expect("encode");
                stream.write_all(&frame).await.expect("write");
            }
        });
        Agent { configs, out, task }
    }

    fn send(&self, msg: AgentMsg) {
        self.out.send(msg).expect("the agent is running");
    }

    /// The first config within [`PATIENCE`] for which `want` holds (the
    /// others are skipped), and how long it took.
    async fn config_where(
        &mut self,
        want: impl Fn(&InstanceConfig) -> bool,
    ) -> (u64, InstanceConfig, Duration) {
        let t = Instant::now();
        loop {
            let next =
                tokio::time::timeout(PATIENCE.saturating_sub(t.elapsed()), self.configs.recv())
                    .await
                    .expect("the config wanted in time")
                    .expect("the agent is running");
            if let (v, Some(cfg)) = next
                && want(&cfg)
            {
                return (v, cfg, t.elapsed());
            }
        }
    }

    /// Asserts that no config arrives for [`QUIET`].
    async fn nothing_pushed(&mut self, why: &str) {
        let got = tokio::time::timeout(QUIET, self.configs.recv()).await;
        assert!(got.is_err(), "{why}: {got:?}");
    }
}

/// The service `VS` in `cfg`.
fn service(cfg: &InstanceConfig) -> &LbService {
    cfg.load_balancers
        .iter()
        .find(|s| s.vs.key() == VS)
        .expect("the distributed virtual server")
}

/// `VS`'s liveness per real server, all up when `live` is empty.
fn live(cfg: &InstanceConfig) -> Vec<Liveness> {
    let s = service(cfg);
    if s.live.is_empty() {
        vec![Liveness::Up; s.vs.real_servers.len()]
    } else {
        s.live.clone()
    }
}

/// A serving gateway with [`STATE`], vm1 and the edge enrolled, the
/// control channel, and both connected with their first config read.
async fn setup(tag: &str) -> (Fixture, Agent, Agent) {
    let f = common::fixture(tag).await;
    let (st, v) = f.admin("PUT", "/api/v1/state", STATE).await;
    assert_eq!(st, 200, "{v}");
    let vm1_meta = common::meta("vm1", "web", 1);
    let (vm_cert, vm_key) = common::enroll_instance(&f, &vm1_meta).await;
    let edge_meta = common::meta("edge-1", "web", 50);
    let (body, edge_key) = common::enroll_body_as(
        &f.bootstrap_pem,
        &edge_meta,
        Role::Edge,
        gateway::util::now_unix(),
    );
    let edge_cert = f
        .submit(&body)
        .await
        .expect("the edge enrolls")
        .certificate_pem;
    // Serves until the test ends (dropping the sender does not stop it).
    let (control, _) = common::control_channel(&f, Default::default()).await;
    let mut vm1 = Agent::connect(&f, control, vm1_meta, &vm_cert, &vm_key).await;
    let mut edge = Agent::connect(&f, control, edge_meta, &edge_cert, &edge_key).await;
    let (_, cfg, _) = vm1.config_where(|_| true).await;
    assert_eq!(live(&cfg), [Liveness::Up, Liveness::Up]);
    assert!(service(&cfg).live.is_empty(), "no verdict yet");
    let (_, cfg, _) = edge.config_where(|_| true).await;
    let t0 = cfg.tier0.as_ref().expect("the edge's tier0");
    let checked: Vec<String> = t0.health_checks.iter().map(|v| v.key()).collect();
    assert_eq!(checked, [VS], "only the virtual server with checkers");
    assert_eq!(t0.health_check_ip, Ipv4Addr::new(100, 64, 0, 1));
    assert!(
        cfg.load_balancers.is_empty(),
        "the edge balances none of them"
    );
    (f, vm1, edge)
}

/// `GET /api/v1/load-balancers`: the `health` of real server `j` of
/// virtual server `i`.
async fn api_health(f: &Fixture, i: usize, j: usize) -> serde_json::Value {
    let (st, v) = f.admin("GET", "/api/v1/load-balancers", "").await;
    assert_eq!(st, 200, "{v}");
    v[i]["real_servers"][j]["health"].clone()
}

fn up_series(real: &str) -> String {
    format!("nsx_gateway_lb_real_server_up{{virtual_server=\"{VS}\",real_server=\"{real}\"}}")
}

fn transitions_series(real: &str) -> String {
    format!(
        "nsx_gateway_lb_health_transitions_total{{virtual_server=\"{VS}\",real_server=\"{real}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_verdicts_reach_the_agents_balancing_the_server() {
    let (f, mut vm1, edge) = setup("lb-health").await;
    let edge_version = f.gw.desired_config_for("edge-1").expect("edge config").0;

    // Down: vm1 gets it, timed from the send.
    let t = Instant::now();
    edge.send(report(
        true,
        &[(rs100(), Liveness::Down), (rs101(), Liveness::Up)],
    ));
    let (v1, cfg, _) = vm1
        .config_where(|c| live(c) == [Liveness::Down, Liveness::Up])
        .await;
    let took = t.elapsed();
    eprintln!(
        "Down: at vm1's agent {} ms after the edge sent it",
        took.as_millis()
    );
    assert!(took < VERDICT_BOUND, "{took:?}");
    control::validate(&cfg).expect("the config validates with verdicts");
    assert_eq!(
        f.gw.desired_config_for("edge-1").expect("edge config").0,
        edge_version,
        "the edge's config does not carry the server: unchanged"
    );

    // The views.
    let down = api_health(&f, 0, 0).await;
    assert_eq!(down["state"], "down", "{down}");
    assert_eq!(down["reason"], "Down by the test");
    let since = down["since"].as_u64().expect("since");
    assert!(gateway::util::now_unix().abs_diff(since) < 60, "{down}");
    assert_eq!(api_health(&f, 0, 1).await["state"], "up");
    assert!(
        api_health(&f, 1, 0).await.is_null(),
        "no checker, no health"
    );
    let m = common::scrape(&f).await;
    assert_eq!(m.get(&up_series("192.168.1.100:8089")), Some(&0.0), "{m:?}");
    assert_eq!(m.get(&up_series("192.168.1.101:18089")), Some(&1.0));
    assert_eq!(m.get(&transitions_series("192.168.1.100:8089")), Some(&1.0));
    assert_eq!(
        m.get(&transitions_series("192.168.1.101:18089")),
        Some(&0.0)
    );
    assert!(
        !m.keys().any(|k| k.contains("192.168.99.30")),
        "series only for checked servers"
    );
    assert_eq!(
        m.get("nsx_gateway_lb_health_reports_ignored_total"),
        Some(&0.0)
    );

    // A burst of changes: the last one wins.
    let t = Instant::now();
    for w in [1, 2, 3] {
        edge.send(report(false, &[(rs101(), Liveness::Weight(w))]));
    }
    let (v2, _, _) = vm1
        .config_where(|c| live(c) == [Liveness::Down, Liveness::Weight(3)])
        .await;
    eprintln!(
        "Weight(3): at vm1's agent {} ms after the burst",
        t.elapsed().as_millis()
    );
    assert!(v2 > v1);
    let w = api_health(&f, 0, 1).await;
    assert_eq!(
        (&w["state"], &w["weight"]),
        (&"weight".into(), &3.into()),
        "{w}"
    );

    // A full report that no longer names 192.168.1.100: it is up again.
    edge.send(report(true, &[(rs101(), Liveness::Weight(3))]));
    let (v3, cfg, _) = vm1
        .config_where(|c| live(c) == [Liveness::Up, Liveness::Weight(3)])
        .await;
    assert_eq!(service(&cfg).live, [Liveness::Up, Liveness::Weight(3)]);
    // What the admin API says is pushed is what was pushed (one view).
    let (st, c) = f.admin("GET", "/api/v1/instances/vm1/config", "").await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["version"], v3);
    assert_eq!(
        c["config"]["load_balancers"][0]["live"],
        serde_json::json!(["up", {"weight": 3}])
    );
    let up = api_health(&f, 0, 0).await;
    assert_eq!(up["state"], "up", "{up}");
    let m = common::scrape(&f).await;
    assert_eq!(m.get(&up_series("192.168.1.100:8089")), Some(&1.0));
    assert_eq!(m.get(&transitions_series("192.168.1.100:8089")), Some(&2.0));

    // The edge goes away: its verdicts stay.
    let version = f.gw.store().version().expect("version");
    drop(edge);
    vm1.nothing_pushed("the edge's session ended").await;
    assert_eq!(f.gw.store().version().expect("version"), version);
    assert_eq!(api_health(&f, 0, 1).await["state"], "weight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_others_and_on_unchecked_servers_change_nothing() {
    let (f, mut vm1, edge) = setup("lb-health-ignored").await;
    let version = f.gw.store().version().expect("version");

    // vm1 is no edge: ignored, counted.
    vm1.send(report(true, &[(rs100(), Liveness::Down)]));
    vm1.nothing_pushed("a report from an instance").await;
    let m = common::scrape(&f).await;
    assert_eq!(
        m.get("nsx_gateway_lb_health_reports_ignored_total"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("nsx_gateway_control_messages_received_total{type=\"health\"}"),
        Some(&1.0)
    );
    assert_eq!(
        api_health(&f, 0, 0).await,
        serde_json::json!({"state": "up"})
    );

    // The edge on servers the state does not check: an unknown virtual
    // server, an unknown real server, a real server without a checker.
    edge.send(report(
        false,
        &[
            (
                key("10.64.1.9", 10000, "192.168.1.100", 8089),
                Liveness::Down,
            ),
            (
                key("10.64.1.2", 10000, "192.168.1.102", 8089),
                Liveness::Down,
            ),
            (key("10.64.1.3", 80, "192.168.99.30", 80), Liveness::Down),
        ],
    ));
    vm1.nothing_pushed("verdicts on unchecked servers").await;
    assert_eq!(
        f.gw.store().version().expect("version"),
        version,
        "no version moved"
    );
    let (_, lbs) = f.admin("GET", "/api/v1/load-balancers", "").await;
    assert!(lbs[1]["real_servers"][0].get("health").is_none(), "{lbs}");

    // The same path with a verdict that counts: vm1 gets it.
    edge.send(report(false, &[(rs101(), Liveness::Down)]));
    vm1.config_where(|c| live(c) == [Liveness::Up, Liveness::Down])
        .await;
    assert_eq!(f.gw.store().version().expect("version"), version + 1);
}

/// A verdict stays while its server is checked, and goes with the
/// checker: a state without it brings the server back at its weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_goes_with_its_checker() {
    let (f, mut vm1, edge) = setup("lb-health-state").await;
    edge.send(report(false, &[(rs100(), Liveness::Down)]));
    vm1.config_where(|c| live(c) == [Liveness::Down, Liveness::Up])
        .await;
    let unchecked = STATE.replace(
        "{ip: 192.168.1.100, port: 8089, check: {type: tcp}}",
        "{ip: 192.168.1.100, port: 8089}",
    );
    let (st, v) = f.admin("PUT", "/api/v1/state", &unchecked).await;
    assert_eq!(st, 200, "{v}");
    let (_, cfg, _) = vm1
        .config_where(|c| live(c) == [Liveness::Up, Liveness::Up])
        .await;
    assert!(service(&cfg).live.is_empty(), "{:?}", service(&cfg));
    assert!(api_health(&f, 0, 0).await.is_null());
    // Checked again: it starts up, until the edge says otherwise.
    let (st, v) = f.admin("PUT", "/api/v1/state", STATE).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        api_health(&f, 0, 0).await,
        serde_json::json!({"state": "up"})
    );
    let (_, cfg, _) = vm1
        .config_where(|c| service(c).vs.real_servers[0].check.is_some())
        .await;
    assert!(service(&cfg).live.is_empty(), "{:?}", service(&cfg));
}

/// A report from an instance that is not the edge is dropped where the
/// session hands it over, counted at once and never queued: it costs no
/// store access (shown with the store held, which the applier would wait
/// for). Before any snapshot is cached the applier decides, and the
/// edge's reports always go to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_others_are_dropped_before_the_queue() {
    use gateway::control_server::ControlStore;
    use gateway::control_store::GatewayControl;

    let (f, mut vm1, _edge) = setup("lb-health-flood").await;
    let down = |key| HealthReport {
        full: false,
        verdicts: vec![HealthVerdict {
            key,
            liveness: Liveness::Down,
            reason: "down by the test".into(),
        }],
    };
    let ignored = || f.gw.counters().values().health_ignored;
    let ctl = GatewayControl::new(f.gw.clone());

    // No snapshot cached yet: the applier decides (once the store is free).
    {
        let _held = f.gw.store();
        ctl.health("vm1", down(rs100()));
        assert_eq!(ignored(), 0, "queued for the applier");
    }
    let t = Instant::now();
    while ignored() < 1 {
        assert!(t.elapsed() < PATIENCE, "the applier ignores it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A session's Hello caches a snapshot that names the edge.
    ctl.hello("vm1", &common::meta("vm1", "web", 1))
        .expect("vm1's hello");
    {
        let _held = f.gw.store();
        for _ in 0..1000 {
            ctl.health("vm1", down(rs100()));
        }
        assert_eq!(ignored(), 1001, "counted without the store");
        ctl.health("edge-1", down(rs101()));
        assert_eq!(ignored(), 1001, "the edge's is queued");
    }
    vm1.config_where(|c| live(c) == [Liveness::Up, Liveness::Down])
        .await;
    assert_eq!(ignored(), 1001);
}
