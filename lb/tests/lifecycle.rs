//! Connections across time and configuration: persistence templates and
//! their expiry, drain, removal, down servers, quorum and the sorry
//! server, per-state timeouts, ActiveConn/InActConn, counters and rates.

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use std::net::SocketAddrV4;

use common::*;
use control::lb::{ForwardKind, LbProtocol, LbService, Liveness, Scheduler};
use lb::engine::{
    Balancer, ConnState, DropReason, Error, How, PassReason, Verdict, check_services,
};

#[test]
fn persistence_holds_then_rotates() {
    // The seed's example: rr, two servers, persistence 10 s.
    let mut cfg = vs(10000, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    cfg.persistence_timeout = Some(10);
    let mut b = balancer(100, &[svc(cfg)]);
    let c = client(7);
    let first = open_tcp(&mut b, c, 1000, 10000, T0).unwrap();
    assert_eq!(first, server(0));
    // A second connection of the same client: the template, not rr's turn.
    let syn = tcp_packet(c, 1001, ip(VIP), 10000, SYN, 0);
    let d = b.peek(&syn, T0 + S);
    assert!(matches!(d.how, Some(How::Template(_))), "{d}");
    assert_eq!(open_tcp(&mut b, c, 1001, 10000, T0 + S), Some(first));
    let t: Vec<_> = b.templates(T0 + S).collect();
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].client, t[0].server, t[0].connections), (c, first, 2));
    assert_eq!((t[0].mask, t[0].expires_in_secs), (32, None));
    // Both end: closed at T0 + 2 s. Their TIME_WAIT (120 s) does not hold
    // the template: it lives 10 s after the last connection closed.
    close_tcp(&mut b, c, 1000, 10000, first, T0 + 2 * S);
    close_tcp(&mut b, c, 1001, 10000, first, T0 + 2 * S);
    let closed = T0 + 2 * S;
    b.tick(closed + S);
    assert_eq!(b.len(), 2, "both in TIME_WAIT");
    let t = b.templates(closed + S).next().unwrap();
    assert_eq!(t.connections, 0);
    let left = t.expires_in_secs.unwrap();
    assert!((8..=10).contains(&left), "{left}");
    // Within those 10 s: still the same server.
    let syn = tcp_packet(c, 1002, ip(VIP), 10000, SYN, 0);
    assert_eq!(b.peek(&syn, closed + 7 * S).real, Some(first));
    // After: the template has expired, rr's turn: the other server.
    let later = closed + 12 * S;
    let d = b.peek(&syn, later);
    assert!(
        matches!(d.how, Some(How::Scheduled { template: true, .. })),
        "{d}"
    );
    assert_eq!(d.real, Some(server(1)));
    b.tick(later);
    assert_eq!(b.templates_len(), 0);
    assert_eq!(open_tcp(&mut b, c, 1003, 10000, later), Some(server(1)));
    assert_eq!(open_tcp(&mut b, c, 1004, 10000, later), Some(server(1)));
    assert_eq!(b.view(later).templates_expired, 1);
}

#[test]
fn persistence_groups_by_granularity() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(4, |_| 1));
    cfg.persistence_timeout = Some(60);
    cfg.persistence_granularity = 24;
    let mut b = balancer(100, &[svc(cfg)]);
    let a = syn_to(&mut b, ip("10.9.9.1"), 1, 80, T0).unwrap();
    for h in 2..20 {
        let c = std::net::Ipv4Addr::new(10, 9, 9, h);
        assert_eq!(syn_to(&mut b, c, 1, 80, T0), Some(a));
    }
    assert_ne!(syn_to(&mut b, ip("10.9.8.1"), 1, 80, T0), Some(a));
    let t: Vec<_> = b.templates(T0).collect();
    assert_eq!(t.len(), 2);
    assert!(t.iter().any(|t| t.client == ip("10.9.9.0") && t.mask == 24));
}

#[test]
fn drained_server_keeps_its_connections_gets_no_new_ones() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    cfg.persistence_timeout = Some(300);
    let mut b = balancer(1000, &[svc(cfg.clone())]);
    let mut on_b = Vec::new();
    for i in 0..20 {
        let r = open_tcp(&mut b, client(i), 1000, 80, T0).unwrap();
        if r == server(1) {
            on_b.push(i);
        }
    }
    assert_eq!(on_b.len(), 10);
    // Drain server 1 (weight 0, as misc_dynamic or the gateway says).
    b.set_services(
        &[with_live(
            cfg.clone(),
            vec![Liveness::Up, Liveness::Weight(0)],
        )],
        T0 + S,
    )
    .unwrap();
    // Its connections go on, both ways.
    for &i in &on_b {
        let mut p = tcp_packet(client(i), 1000, ip(VIP), 80, ACK, 100);
        fwd(&mut b, &mut p, T0 + 2 * S);
        assert_eq!(dst_of(&p), server(1));
        let mut r = tcp_packet(ip("192.168.1.2"), 8080, client(i), 1000, ACK, 100);
        assert!(matches!(
            rev(&mut b, &mut r, T0 + 2 * S).verdict,
            Verdict::Translate(_)
        ));
    }
    // New connections, its persistent clients' too: the other server only
    // (their templates are dropped, they are scheduled anew).
    for i in 0..40 {
        assert_eq!(
            syn_to(&mut b, client(i), 2000, 80, T0 + 3 * S),
            Some(server(0))
        );
    }
    let v = b.view(T0 + 3 * S);
    let rs = &v.services[0].real_servers;
    assert_eq!((rs[1].weight, rs[1].configured_weight), (0, 1));
    assert_eq!(rs[1].active, 10);
    assert_eq!(rs[0].inactive, 40);
}

#[test]
fn removed_server_keeps_established_connections() {
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Fnat, reals(2, |_| 1));
    let mut b = balancer(100, &[svc(cfg.clone())]);
    let r0 = open_tcp(&mut b, client(1), 1000, 80, T0).unwrap();
    let r1 = open_tcp(&mut b, client(2), 1000, 80, T0).unwrap();
    assert_eq!((r0, r1), (server(0), server(1)));
    let mut fewer = cfg.clone();
    fewer.real_servers.remove(1);
    b.set_services(&[svc(fewer.clone())], T0 + S).unwrap();
    let v = b.view(T0 + S);
    assert_eq!(v.services[0].real_servers.len(), 1);
    assert_eq!(v.detached.len(), 1);
    assert_eq!(v.detached[0].server.active, 1);
    assert_eq!(v.detached[0].service(), format!("TCP {VIP}:80"));
    // Client 2 goes on with the removed server, both ways.
    let mut p = tcp_packet(client(2), 1000, ip(VIP), 80, ACK, 10);
    fwd(&mut b, &mut p, T0 + 2 * S);
    assert_eq!(dst_of(&p), server(1));
    let snat = src_of(&p);
    let mut r = tcp_packet(ip("192.168.1.2"), 8080, *snat.ip(), snat.port(), ACK, 10);
    rev(&mut b, &mut r, T0 + 2 * S);
    assert_eq!(dst_of(&r), SocketAddrV4::new(client(2), 1000));
    // New ones: the remaining server.
    for i in 10..20 {
        assert_eq!(
            syn_to(&mut b, client(i), 1, 80, T0 + 2 * S),
            Some(server(0))
        );
    }
    // Once its connection ends and expires, the next configuration frees it.
    close_tcp(&mut b, client(2), 1000, 80, server(1), T0 + 3 * S);
    b.tick(T0 + 200 * S);
    b.set_services(&[svc(fewer)], T0 + 200 * S).unwrap();
    assert!(b.view(T0 + 200 * S).detached.is_empty());
    assert!(!b.is_real_server(6, ip("192.168.1.2"), 8080));
}

#[test]
fn down_servers_unlisted_or_inhibited() {
    let mut cfg = vs(80, Scheduler::Wlc, ForwardKind::Nat, reals(3, |_| 2));
    cfg.real_servers[2].inhibit_on_failure = Some(true);
    let live = vec![Liveness::Down, Liveness::Up, Liveness::Down];
    let mut b = balancer(100, &[with_live(cfg, live)]);
    let v = b.view(T0);
    let rs = &v.services[0].real_servers;
    // Server 0 removed (keepalived deletes it); server 2 listed at weight 0.
    assert_eq!(rs.len(), 2);
    assert_eq!((rs[0].ip, rs[0].weight), (*server(1).ip(), 2));
    assert_eq!((rs[1].ip, rs[1].weight), (*server(2).ip(), 0));
    for i in 0..10 {
        assert_eq!(syn_to(&mut b, client(i), 1, 80, T0), Some(server(1)));
    }
}

#[test]
fn quorum_and_sorry_server_with_hysteresis() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(4, |_| 1));
    cfg.quorum = 3;
    cfg.hysteresis = 1;
    cfg.sorry_server = Some(endpoint("192.168.9.9:80"));
    let sorry = sa("192.168.9.9:80");
    let live = |up: usize| -> Vec<Liveness> {
        (0..4)
            .map(|i| if i < up { Liveness::Up } else { Liveness::Down })
            .collect()
    };
    let mut b = balancer(1000, &[with_live(cfg.clone(), live(4))]);
    let mut n = 0;
    let mut next = |b: &mut lb::engine::Balancer, now| {
        n += 1;
        syn_to(b, client(n), 1, 80, now).unwrap()
    };
    assert_ne!(next(&mut b, T0), sorry);
    // Down below quorum - hysteresis (2): at 3 and 2 still up.
    for (up, to_sorry) in [
        (3, false),
        (2, false),
        (1, true),
        (2, true),
        (3, true),
        (4, false),
    ] {
        b.set_services(&[with_live(cfg.clone(), live(up))], T0)
            .unwrap();
        let got = next(&mut b, T0);
        assert_eq!(got == sorry, to_sorry, "{up} up: {got}");
        let v = b.view(T0);
        assert_eq!(v.services[0].quorum_up, !to_sorry);
        assert_eq!(v.services[0].sorry_active, to_sorry);
    }
    // The sorry server's connection runs on after the quorum is back.
    b.set_services(&[with_live(cfg.clone(), live(1))], T0)
        .unwrap();
    let c = client(999);
    assert_eq!(open_tcp(&mut b, c, 5, 80, T0), Some(sorry));
    b.set_services(&[with_live(cfg.clone(), live(4))], T0)
        .unwrap();
    let mut p = tcp_packet(c, 5, ip(VIP), 80, ACK, 1);
    fwd(&mut b, &mut p, T0);
    assert_eq!(dst_of(&p), sorry);
    let d = b.view(T0);
    assert!(d.services[0].sorry_server.as_ref().unwrap().active >= 1);
    assert!(d.sorry_connections >= 3);
    let syn = tcp_packet(client(5000), 1, ip(VIP), 80, SYN, 0);
    let how = b.peek(&syn, T0).how;
    assert!(matches!(how, Some(How::Scheduled { .. })), "{how:?}");
}

#[test]
fn no_live_server_sorry_or_drop() {
    let mut cfg = vs(80, Scheduler::Wrr, ForwardKind::Nat, reals(2, |_| 1));
    let down = vec![Liveness::Down, Liveness::Down];
    let mut b = balancer(100, &[with_live(cfg.clone(), down.clone())]);
    assert_eq!(syn_to(&mut b, client(1), 1, 80, T0), None);
    assert_eq!(b.drops(DropReason::NoServer), 1);
    cfg.sorry_server = Some(endpoint("192.168.9.9:80"));
    b.set_services(&[with_live(cfg, down)], T0).unwrap();
    let syn = tcp_packet(client(1), 1, ip(VIP), 80, SYN, 0);
    assert!(matches!(
        b.peek(&syn, T0).how,
        Some(How::Sorry {
            quorum_down: true,
            ..
        })
    ));
    assert_eq!(
        syn_to(&mut b, client(1), 1, 80, T0),
        Some(sa("192.168.9.9:80"))
    );
}

#[test]
fn active_inactive_and_timeouts() {
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(1, |_| 1));
    let mut udp = cfg.clone();
    udp.protocol = control::lb::LbProtocol::Udp;
    udp.port = 53;
    let mut b = balancer(100, &[svc(cfg), svc(udp)]);
    let counts = |b: &lb::engine::Balancer| {
        let v = b.view(T0);
        let r = &v.services[0].real_servers[0];
        (r.active, r.inactive, v.services[1].real_servers[0].inactive)
    };
    let mut syn = tcp_packet(client(1), 9, ip(VIP), 80, SYN, 0);
    fwd(&mut b, &mut syn, T0);
    assert_eq!(counts(&b), (0, 1, 0), "SYN_RECV is inactive");
    let mut ack = tcp_packet(client(1), 9, ip(VIP), 80, ACK, 0);
    let d = fwd(&mut b, &mut ack, T0);
    assert_eq!(d.how, Some(How::Connection(ConnState::Established)));
    assert_eq!(counts(&b), (1, 0, 0));
    let mut u = udp_packet(client(1), 9, ip(VIP), 53, 20);
    fwd(&mut b, &mut u, T0);
    assert_eq!(counts(&b), (1, 0, 1), "UDP is always inactive");
    // Established: 900 s; UDP: 300 s.
    b.tick(T0 + 299 * S);
    assert_eq!(b.len(), 2);
    b.tick(T0 + 301 * S);
    assert_eq!(b.len(), 1);
    b.tick(T0 + 899 * S);
    assert_eq!(b.len(), 1);
    b.tick(T0 + 901 * S);
    assert_eq!(b.len(), 0);
    assert_eq!(counts(&b), (0, 0, 0));
    // SYN_RECV: 60 s; a RST: CLOSE, 10 s.
    fwd(
        &mut b,
        &mut tcp_packet(client(2), 9, ip(VIP), 80, SYN, 0),
        T0,
    );
    b.tick(T0 + 59 * S);
    assert_eq!(b.len(), 1);
    b.tick(T0 + 61 * S);
    assert_eq!(b.len(), 0);
    open_tcp(&mut b, client(3), 9, 80, T0).unwrap();
    let d = fwd(
        &mut b,
        &mut tcp_packet(client(3), 9, ip(VIP), 80, RST, 0),
        T0,
    );
    assert_eq!(d.how, Some(How::Connection(ConnState::Close)));
    b.tick(T0 + 9 * S);
    assert_eq!(b.len(), 1);
    b.tick(T0 + 11 * S);
    assert_eq!(b.len(), 0);
    assert_eq!(b.view(T0).expired, 4);
}

#[test]
fn non_syn_without_connection_is_dropped_counted() {
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(1, |_| 1));
    let mut b = balancer(100, &[svc(cfg)]);
    for flags in [ACK, SYN | ACK, FIN | ACK, RST, SYN | RST] {
        let d = b.forward(&tcp_packet(client(1), 9, ip(VIP), 80, flags, 0), T0);
        assert_eq!(
            d.verdict,
            Verdict::Drop(DropReason::NoConnection),
            "{flags:#x}"
        );
    }
    assert_eq!(b.drops(DropReason::NoConnection), 5);
    // Not a virtual server: passed, not counted.
    let d = b.forward(&tcp_packet(client(1), 9, ip(VIP), 81, SYN, 0), T0);
    assert_eq!(d.verdict, Verdict::Pass(PassReason::NotService));
    let d = b.reverse(
        &tcp_packet(ip("192.168.1.1"), 8080, client(1), 9, ACK, 0),
        T0,
    );
    assert_eq!(d.verdict, Verdict::Pass(PassReason::NoConnection));
    assert!(b.is_service(6, ip(VIP), 80));
    assert!(!b.is_service(17, ip(VIP), 80));
    assert!(b.is_vip(ip(VIP)));
    assert!(b.is_real_server(6, ip("192.168.1.1"), 8080));
}

#[test]
fn a_reused_port_pair_is_a_new_connection() {
    // IPVS's conn_reuse_mode 1: a client SYN on a TIME_WAIT connection
    // expires it and is scheduled anew (rr moves on) and counted.
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    let mut b = balancer(100, &[svc(cfg.clone())]);
    let c = client(1);
    let r = open_tcp(&mut b, c, 7, 80, T0).unwrap();
    close_tcp(&mut b, c, 7, 80, r, T0);
    let d = fwd(&mut b, &mut tcp_packet(c, 7, ip(VIP), 80, SYN, 0), T0 + S);
    assert!(matches!(d.how, Some(How::Scheduled { .. })), "{d}");
    assert_ne!(d.real, Some(r), "rr moved on");
    assert_eq!(b.len(), 1, "the old connection gone");
    let view = b.view(T0 + S);
    assert_eq!(view.services[0].stats.conns, 2, "counted as a new one");
    // Persistent: scheduled anew through its template, so the same server.
    let mut p = cfg;
    p.persistence_timeout = Some(30);
    let mut b = balancer(100, &[svc(p)]);
    let r = open_tcp(&mut b, c, 7, 80, T0).unwrap();
    close_tcp(&mut b, c, 7, 80, r, T0);
    let d = fwd(&mut b, &mut tcp_packet(c, 7, ip(VIP), 80, SYN, 0), T0 + S);
    assert_eq!(d.real, Some(r), "the template keeps the client");
    assert_eq!(b.len(), 1);
}

#[test]
fn counters_and_rates() {
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    let mut b = balancer(1000, &[svc(cfg)]);
    b.estimate(T0);
    for i in 0..200 {
        let mut p = tcp_packet(client(i), 1, ip(VIP), 80, SYN, 60);
        fwd(&mut b, &mut p, T0);
        let real = dst_of(&p);
        let mut r = tcp_packet(*real.ip(), 8080, client(i), 1, SYN | ACK, 0);
        rev(&mut b, &mut r, T0);
    }
    b.estimate(T0 + 2 * S);
    let v = b.view(T0 + 2 * S);
    let s = &v.services[0];
    assert_eq!(s.stats.conns, 200);
    assert_eq!((s.stats.inpkts, s.stats.inbytes), (200, 200 * 100));
    assert_eq!((s.stats.outpkts, s.stats.outbytes), (200, 200 * 40));
    // IPVS's average: a quarter of the way to 100/s at the first run.
    assert_eq!(s.rates.cps, 25);
    assert_eq!(s.rates.inbps, 2500);
    for r in &s.real_servers {
        assert_eq!(r.stats.conns, 100);
        assert_eq!(r.rates.outpps, 13);
    }
    assert_eq!(v.created, 200);
    let json = serde_json::to_string(&v).unwrap();
    assert!(json.contains("\"forward\":\"Masq\""), "{json}");
}

#[test]
fn a_decision_outliving_its_configuration_is_harmless() {
    let a = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    let mut b = balancer(100, &[svc(a.clone())]);
    let syn = tcp_packet(client(1), 1, ip(VIP), 80, SYN, 0);
    let d = b.peek(&syn, T0);
    // The servers are replaced before the decision is committed: their
    // slots are freed (nothing named them) and the decision is refused.
    let mut other = a.clone();
    other.real_servers = vec![];
    other.sorry_server = Some(endpoint("192.168.9.9:80"));
    b.set_services(&[svc(other)], T0).unwrap();
    assert_eq!(b.commit(&d, T0), Verdict::Drop(DropReason::NoServer));
    assert_eq!(b.len(), 0);
    // Through the sorry server it goes.
    assert_eq!(
        syn_to(&mut b, client(1), 1, 80, T0),
        Some(sa("192.168.9.9:80"))
    );
    // Two swaps later its slot has gone to another server (freed at the
    // first, taken at the second): refused all the same, not attached to
    // the newcomer.
    let mut b = balancer(100, &[svc(a.clone())]);
    let d = b.peek(&syn, T0);
    assert_eq!(d.real, Some(server(0)));
    let mut first = a.clone();
    first.real_servers = reals(3, |_| 1)[2..].to_vec();
    b.set_services(&[svc(first)], T0).unwrap();
    let mut second = a;
    second.real_servers = reals(4, |_| 1)[3..].to_vec();
    b.set_services(&[svc(second)], T0).unwrap();
    assert_eq!(b.commit(&d, T0), Verdict::Drop(DropReason::NoServer));
    assert_eq!(b.len(), 0);
    assert_eq!(syn_to(&mut b, client(1), 1, 80, T0), Some(server(3)));
}

#[test]
fn a_refused_configuration_leaves_the_previous_one_whole() {
    let mut web = vs(80, Scheduler::Rr, ForwardKind::Fnat, reals(3, |_| 1));
    web.persistence_timeout = Some(60);
    let mut dns = vs(53, Scheduler::Wlc, ForwardKind::Nat, reals(2, |_| 1));
    dns.protocol = LbProtocol::Udp;
    let mut b = balancer(100, &[svc(web.clone()), svc(dns.clone())]);
    open_tcp(&mut b, client(1), 1000, 80, T0).unwrap();
    open_tcp(&mut b, client(2), 1000, 80, T0).unwrap();
    fwd(
        &mut b,
        &mut udp_packet(client(1), 5353, ip(VIP), 53, 10),
        T0,
    );
    let next = tcp_packet(client(3), 1, ip(VIP), 80, SYN, 0);
    let state = |b: &Balancer| {
        (
            b.view(T0),
            b.templates(T0).collect::<Vec<_>>(),
            b.connections(T0).collect::<Vec<_>>(),
            b.peek(&next, T0),
        )
    };
    let before = state(&b);
    // Each bad configuration comes after a valid change of the first
    // virtual server (one server left, another scheduler): none of it
    // may land.
    let mut changed = web.clone();
    changed.real_servers.truncate(1);
    changed.scheduler = Scheduler::Wlc;
    let with = |bad: LbService| vec![svc(changed.clone()), bad];
    let mut granularity = dns.clone();
    granularity.persistence_granularity = 33;
    let mut many = dns.clone();
    many.real_servers = reals(65_536, |_| 1);
    let mut heavy = dns.clone();
    heavy.real_servers[1].weight = 65_536;
    let mut no_snat = dns.clone();
    no_snat.kind = ForwardKind::Fnat;
    let mut twice = dns.clone();
    twice.real_servers[1] = twice.real_servers[0].clone();
    type Refusal = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<LbService>, Refusal)> = vec![
        ("declared twice", with(svc(changed.clone())), |e| {
            matches!(e, Error::Duplicate { .. })
        }),
        (
            "liveness",
            with(with_live(dns.clone(), vec![Liveness::Up])),
            |e| matches!(e, Error::Liveness { .. }),
        ),
        ("granularity", with(svc(granularity)), |e| {
            matches!(e, Error::Granularity { .. })
        }),
        ("too many servers", with(svc(many)), |e| {
            matches!(e, Error::TooManyServers { .. })
        }),
        ("weight", with(svc(heavy)), |e| {
            matches!(e, Error::Weight { .. })
        }),
        ("no SNAT address", with(svc(no_snat)), |e| {
            matches!(e, Error::NoSnatIp { .. })
        }),
        ("server listed twice", with(svc(twice)), |e| {
            matches!(e, Error::DuplicateServer { .. })
        }),
    ];
    for (name, services, want) in cases {
        let err = b.set_services(&services, T0 + S).unwrap_err();
        assert!(want(&err), "{name}: {err}");
        // The datapath's check at table build says the same.
        assert_eq!(check_services(&services, None), Err(err), "{name}");
        assert!(
            state(&b) == before,
            "{name}: the refused configuration changed the balancer"
        );
    }
    // The balancer goes on as before: the next SYN where peek said, the
    // existing connections both ways.
    let mut syn = next.clone();
    assert_eq!(fwd(&mut b, &mut syn, T0).real, before.3.real);
    client_sends(&mut b, client(1), 1000, 80, ACK, 10, T0);
    // And the valid change alone is taken.
    b.set_services(&[svc(changed)], T0 + S).unwrap();
    assert_eq!(b.view(T0).services.len(), 1);
}
