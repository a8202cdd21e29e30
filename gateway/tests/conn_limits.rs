//! Connection limits of a serving gateway over real sockets on loopback,
//! where a client socket's source address makes the peer: one peer
//! (127.0.0.2) holding more than its share of idle connections on the
//! enrollment listener, an install listener and the control channel has the
//! excess closed right after accept (nothing written, no TLS handshake
//! attempted, counted per listener and reason in `/metrics`), while another
//! peer (127.0.0.1) still enrolls, downloads and completes its mutual-TLS
//! session; once the control channel is full a third peer (127.0.0.3) is
//! refused for the total cap.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use control::{Decoder, GatewayMsg};
use gateway::conn_limit::Limits;
use gateway::control_server::ServerOptions;
use gateway::install::DistDir;
use gateway::pki;
use gateway::server::{HttpLimits, InstallListen};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{Fixture, NAME, meta};

/// The peer that floods.
const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A well-behaved peer.
const AGENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another peer, for the control channel's total cap.
const THIRD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Enrollment and installer: 4 per peer, 8 in all (so the flooder alone
/// could fill a listener without the per-peer cap).
const HTTP: Limits = Limits {
    total: 8,
    per_peer: 4,
};
/// Control channel: 3 per peer, 6 in all.
const CONTROL: Limits = Limits {
    total: 6,
    per_peer: 3,
};

/// A TCP connection from `src` to `to`.
async fn connect_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(src, 0))
        .expect("bind the source address");
    tokio::time::timeout(Duration::from_secs(10), s.connect(to))
        .await
        .expect("connected in time")
        .expect("connect")
}

/// What an idle client connection shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing yet.
    Open,
    /// The server closed it (end of stream or reset).
    Closed,
    /// The server wrote something.
    Data,
}

fn seen(s: &TcpStream) -> Seen {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => Seen::Closed,
        Ok(_) => Seen::Data,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Seen::Open,
        Err(_) => Seen::Closed,
    }
}

/// Opens `n` idle connections from `src` to `to` and waits (bounded) until
/// the server has closed all but `kept`, without writing to any; returns
/// the ones still open.
async fn flood(src: IpAddr, to: SocketAddr, n: usize, kept: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(connect_from(src, to).await);
    }
    // Well before the enrollment listener's 10 s handshake deadline would
    // close the admitted ones too.
    let deadline = Instant::now() + Duration::from_secs(5);
    let states = loop {
        let states: Vec<Seen> = conns.iter().map(seen).collect();
        assert!(
            !states.contains(&Seen::Data),
            "the server wrote to an idle connection from {src} to {to}: {states:?}"
        );
        let open = states.iter().filter(|s| **s == Seen::Open).count();
        if open <= kept || Instant::now() > deadline {
            assert_eq!(
                open, kept,
                "{src} -> {to}: {n} opened, {kept} should stay: {states:?}"
            );
            break states;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The admitted ones stay (the server waits for their first bytes).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again: Vec<Seen> = conns.iter().map(seen).collect();
    assert_eq!(again, states, "{src} -> {to}: admitted connections kept");
    conns
        .into_iter()
        .zip(states)
        .filter(|(_, s)| *s == Seen::Open)
        .map(|(c, _)| c)
        .collect()
}

fn rejected(listener: &str, reason: &str) -> String {
    format!(r#"nsx_gateway_connections_rejected_total{{listener="{listener}",reason="{reason}"}}"#)
}

fn tls_failed(listener: &str, reason: &str) -> String {
    format!(
        r#"nsx_gateway_tls_handshake_failures_total{{listener="{listener}",reason="{reason}"}}"#
    )
}

/// Scrapes until the rejections counted reach `want` (bounded); returns
/// the samples.
async fn scrape_rejections(f: &Fixture, want: &[(&str, &str, f64)]) -> HashMap<String, f64> {
    for _ in 0..100 {
        let m = common::scrape(f).await;
        if want
            .iter()
            .all(|(l, r, n)| m.get(&rejected(l, r)) == Some(n))
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = common::scrape(f).await;
    let got: Vec<_> = want
        .iter()
        .map(|(l, r, _)| (l, r, m.get(&rejected(l, r)).copied()))
        .collect();
    panic!("rejections {want:?} not counted: {got:?}");
}

#[tokio::test]
async fn a_flooding_peer_is_capped_per_listener_and_other_peers_are_served() {
    let f = common::fixture_configured(
        "connlimit",
        DistDir::Unknown("no binaries in this test".into()),
        InstallListen::Explicit(vec!["127.0.0.1:0".parse().expect("addr")]),
        5555,
        HttpLimits {
            enroll: HTTP,
            install: HTTP,
        },
    )
    .await
    .expect("gateway");
    let (control, _stop) = common::control_channel(
        &f,
        ServerOptions {
            connections: CONTROL,
            // The flooder's admitted connections stay for the whole test.
            tls_handshake_timeout: Duration::from_secs(120),
            ..ServerOptions::default()
        },
    )
    .await;
    let enroll = f.srv.enroll_addr;
    let install = f.srv.install_addrs[0];
    let server_name = || ServerName::try_from(NAME).expect("name");
    let https = pki::client_config_trusting(&f.ca_pem).expect("client config");

    // --- enrollment (8443): 10 idle connections, 4 stay.
    let _held_enroll = flood(FLOODER, enroll, 10, HTTP.per_peer).await;
    // One more, a real TLS client: closed before any handshake.
    let tcp = connect_from(FLOODER, enroll).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(https.clone()).connect(server_name(), tcp),
    )
    .await
    .expect("the excess connection is closed in time");
    assert!(r.is_err(), "no TLS for a connection over the limit");
    // Another peer enrolls meanwhile (the flooder alone would have filled
    // the listener's 8).
    let (cert, key) = common::enroll_instance(&f, &meta("i-agent", "default", 11)).await;

    // --- installer (8080): the same, with a request on the extra one.
    let _held_install = flood(FLOODER, install, 10, HTTP.per_peer).await;
    let mut tcp = connect_from(FLOODER, install).await;
    let _ = tcp
        .write_all(b"GET /factory_default/noble_amd64/ca.pem HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the excess connection is closed in time");
    assert!(out.is_empty(), "no answer over the limit: {out:?}");
    let (status, _, body) =
        common::http_get(install, "GET", "/factory_default/noble_amd64/ca.pem").await;
    assert_eq!(status, 200, "another peer downloads");
    assert_eq!(body, f.ca_pem.as_bytes());

    // --- control channel (5555): 5 idle connections, 3 stay.
    let agent_tls = common::agent_tls(&f, &cert, &key);
    let _held_control = flood(FLOODER, control, 5, CONTROL.per_peer).await;
    let tcp = connect_from(FLOODER, control).await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(agent_tls.clone()).connect(server_name(), tcp),
    )
    .await
    .expect("the excess connection is closed in time");
    assert!(r.is_err(), "no TLS for a connection over the limit");
    // The agent's session: mutual TLS, Hello -> Welcome.
    let tcp = connect_from(AGENT, control).await;
    let mut session = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(agent_tls).connect(server_name(), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("the agent's mutual TLS handshake");
    let hello = common::hello_frame(meta("i-agent", "default", 11));
    session.write_all(&hello).await.expect("hello");
    let mut dec = Decoder::<GatewayMsg>::new();
    let mut buf = [0u8; 4096];
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(msg) = dec.next().expect("frame") {
                return msg;
            }
            let n = session.read(&mut buf).await.expect("read");
            assert!(n > 0, "session closed");
            dec.push(&buf[..n]);
        }
    })
    .await
    .expect("Welcome in time");
    assert!(matches!(first, GatewayMsg::Welcome { .. }), "{first:?}");

    // A third peer: 3 + 1 places are taken, 2 are left of 6.
    let _held_third = flood(THIRD, control, 3, 2).await;

    let m = scrape_rejections(
        &f,
        &[
            ("enroll", "per_peer", 7.0),
            ("install", "per_peer", 7.0),
            ("control", "per_peer", 3.0),
            ("control", "total", 1.0),
        ],
    )
    .await;
    for (l, r) in [("enroll", "total"), ("install", "total")] {
        assert_eq!(m.get(&rejected(l, r)), Some(&0.0), "{l} {r}");
    }
    for l in ["admin", "metrics"] {
        for r in ["per_peer", "total"] {
            assert_eq!(m.get(&rejected(l, r)), Some(&0.0), "{l} {r}");
        }
    }
    // Nothing over a limit reached a TLS handshake.
    for l in ["enroll", "control"] {
        assert_eq!(m.get(&tls_failed(l, "error")), Some(&0.0), "{l}");
    }
    let accept_errors: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("nsx_gateway_accept_errors_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(accept_errors, 0.0);
    drop(session);
}
