//! An apply that takes 5 s runs beside the control session (issue 12, build
//! item 9). The real code on both ends: the agent library's enrollment and
//! control client (`agent::gw`) against the gateway's own enrollment
//! listener, control server and store ([`GatewayControl`]), with the agent's
//! main loop replaced by a slow applier. A probe around the store records
//! when the gateway read each frame from the agent, so the test sees the
//! heartbeats as the gateway does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::config::GatewaySettings;
use agent::dp::ctl::Published;
use agent::gw::enroll;
use agent::gw::gwclient::{self, ApplyRequest, GatewayStatus};
use control::{GatewayConfig, InstanceConfig, InstanceMeta};
use gateway::control_server::{
    ControlStore, ServerOptions, SessionEvent, StoreRefusal, TransportEvent,
};
use gateway::control_store::GatewayControl;
use gateway::metrics::CountingControl;
use gateway::{pki, state, util};
use tokio::sync::{mpsc, watch};

mod common;

use common::{NAME, fixture, meta};

/// Heartbeat interval the gateway announces.
const HB: Duration = Duration::from_millis(200);
/// How long the slow applier takes per config.
const APPLY_TAKES: Duration = Duration::from_secs(5);

/// The gateway's store as `nsx-gateway serve` wires it, plus a record of
/// what the control server told it.
struct Probe {
    inner: CountingControl<GatewayControl>,
    /// When each frame from the agent was read.
    frames: Mutex<Vec<Instant>>,
    events: Mutex<Vec<SessionEvent>>,
}

impl Probe {
    fn frames(&self) -> Vec<Instant> {
        self.frames.lock().expect("lock").clone()
    }

    fn events(&self) -> Vec<SessionEvent> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits until an event matches `pred`.
    async fn wait_event(&self, within: Duration, pred: impl Fn(&SessionEvent) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.events().iter().any(&pred) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl ControlStore for Probe {
    fn authorize(&self, cert_der: &[u8]) -> Result<String, StoreRefusal> {
        self.inner.authorize(cert_der)
    }

    fn hello(
        &self,
        instance_id: &str,
        meta: &InstanceMeta,
    ) -> Result<(u32, u64, Option<InstanceConfig>), StoreRefusal> {
        self.inner.hello(instance_id, meta)
    }

    fn desired(&self, instance_id: &str) -> Result<(u64, Option<InstanceConfig>), StoreRefusal> {
        self.inner.desired(instance_id)
    }

    fn report(&self, instance_id: &str, event: SessionEvent) {
        self.events.lock().expect("lock").push(event.clone());
        self.inner.report(instance_id, event);
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn is_revoked(&self, instance_id: &str) -> bool {
        self.inner.is_revoked(instance_id)
    }

    fn transport(&self, event: TransportEvent) {
        if let TransportEvent::FrameReceived { .. } = event {
            self.frames.lock().expect("lock").push(Instant::now());
        }
        self.inner.transport(event);
    }
}

/// The gateway's control server on 127.0.0.1 with the fixture's
/// certificates and `store`, heartbeats every [`HB`].
async fn control_server(
    f: &common::Fixture,
    store: Arc<Probe>,
) -> (SocketAddr, watch::Sender<bool>) {
    let opts = ServerOptions {
        session: GatewayConfig {
            heartbeat_ms: u64::try_from(HB.as_millis()).expect("ms"),
            ..GatewayConfig::default()
        },
        ..ServerOptions::default()
    };
    common::control_channel_with(f, store, opts).await
}

/// Takes the next apply request within `within`; panics otherwise.
async fn next_apply(applies: &mut mpsc::Receiver<ApplyRequest>, within: Duration) -> ApplyRequest {
    tokio::time::timeout(within, applies.recv())
        .await
        .expect("an apply request in time")
        .expect("the client is running")
}

fn state_of(status: &Mutex<Option<GatewayStatus>>) -> String {
    status
        .lock()
        .expect("lock")
        .as_ref()
        .map_or_else(|| "none".into(), |s| s.state.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5s_apply_keeps_the_session_and_its_heartbeats() {
    let f = fixture("apply-beside").await;
    let probe = Arc::new(Probe {
        inner: CountingControl::new(GatewayControl::new(f.gw.clone()), f.gw.clone()),
        frames: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
    });
    let (control, _stop) = control_server(&f, Arc::clone(&probe)).await;

    // The agent library enrolls and dials, as `nsx-agent run` does.
    let id = "i-slow-apply";
    let m = meta(id, "web", 21);
    let settings = GatewaySettings {
        control: control.to_string(),
        enroll: f.srv.enroll_addr.to_string(),
        server_name: NAME.into(),
        ca: f.dir.join(pki::files::CA_CERT),
        bootstrap_key: f.dir.join(pki::files::BOOTSTRAP_KEY),
        instance_id: Some(id.into()),
        image_id: None,
        tags: m.tags.clone(),
    };
    let identity = enroll::enroll(&settings, &f.dir.join("agent-state"), &m)
        .await
        .expect("enrolled");
    let tls = gwclient::client_tls(f.ca_pem.as_bytes(), &identity.cert_pem, &identity.key_pem)
        .expect("client TLS");
    let (apply_tx, mut applies) = mpsc::channel(4);
    let status = Arc::new(Mutex::new(None));
    let client = tokio::spawn(gwclient::run(
        settings,
        Arc::new(tls),
        m,
        None,
        apply_tx,
        Arc::clone(&status),
        Arc::new(Mutex::new(Published::default())),
        Default::default(),
    ));

    // The first snapshot: hold it for 5 s, checking the session meanwhile.
    let first = next_apply(&mut applies, Duration::from_secs(10)).await;
    let started = Instant::now();
    // A change while the apply runs: the gateway keeps it until the ack
    // (stop-and-wait) and then sends it as an Update.
    let seed = "switches:\n  - {name: web-ls, tag: web, vni: 5001, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}\n";
    f.gw.store()
        .apply_state(&state::parse(seed).expect("state"), util::now_unix())
        .expect("apply state");
    f.gw.notify_changed();
    while started.elapsed() < APPLY_TAKES {
        assert_eq!(
            state_of(&status),
            "ESTABLISHED",
            "the agent lost the session {} ms into the apply",
            started.elapsed().as_millis()
        );
        let dropped = probe
            .events()
            .into_iter()
            .find(|e| matches!(e, SessionEvent::Disconnected { .. }));
        assert!(
            dropped.is_none(),
            "the gateway ended the session {} ms into the apply: {dropped:?}",
            started.elapsed().as_millis()
        );
        assert!(
            applies.try_recv().is_err(),
            "a second apply started while the first was running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = started.elapsed();
    first
        .reply
        .send(Ok(()))
        .expect("client waits for the outcome");
    assert!(
        probe
            .wait_event(
                Duration::from_secs(5),
                |e| matches!(e, SessionEvent::Acked(v) if *v == first.version)
            )
            .await,
        "version {} acked after the apply",
        first.version
    );

    // The gateway read a frame (heartbeats, at least) in every interval.
    let frames: Vec<Instant> = probe
        .frames()
        .into_iter()
        .filter(|t| *t >= started && t.duration_since(started) <= held)
        .collect();
    let expected = usize::try_from(APPLY_TAKES.as_millis() / HB.as_millis()).expect("n");
    assert!(
        frames.len() + 2 >= expected,
        "{} frames from the agent during a {} ms apply at {} ms heartbeats",
        frames.len(),
        held.as_millis(),
        HB.as_millis()
    );
    let edges = std::iter::once(started)
        .chain(frames.iter().copied())
        .chain(std::iter::once(started + held));
    let times: Vec<Instant> = edges.collect();
    let widest = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .expect("gaps");
    assert!(
        widest < 2 * HB,
        "the gateway heard nothing for {} ms (heartbeat {} ms): a heartbeat was missed",
        widest.as_millis(),
        HB.as_millis()
    );

    // The change made during the apply follows it, on the same session.
    let second = next_apply(&mut applies, Duration::from_secs(5)).await;
    assert!(second.version > first.version);
    let port = second.config.as_ref().and_then(|c| c.port.as_ref());
    assert_eq!(port.map(|p| p.switch.as_str()), Some("web-ls"));
    second.reply.send(Ok(())).expect("client waits");
    assert!(
        probe
            .wait_event(
                Duration::from_secs(5),
                |e| matches!(e, SessionEvent::Acked(v) if *v == second.version)
            )
            .await
    );
    let events = probe.events();
    let connects = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Connected { .. }))
        .count();
    let drops: Vec<&SessionEvent> = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Disconnected { .. }))
        .collect();
    assert_eq!(
        (connects, drops),
        (1, vec![]),
        "one session throughout: {events:?}"
    );
    assert_eq!(state_of(&status), "ESTABLISHED");
    client.abort();
}
