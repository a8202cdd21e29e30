//! The reader end to end: the seed's example, a realistic file with
//! includes, a broken one, and random token soup.

use std::net::Ipv4Addr;
use std::path::Path;

use control::lb::{Endpoint, ForwardKind, HealthCheck, LbProtocol, Scheduler};
use proptest::prelude::*;

use super::*;

/// The seed's example exactly as the seed writes it: one line, and the
/// spelling `persistent_timeout`.
const SEED: &str = "virtual_server 10.64.1.2 10000 { delay_loop 20 lb_algo rr lb_kind NAT persistent_timeout 10 protocol TCP real_server 192.168.1.100 8089 { weight 1 } real_server 192.168.1.101 18089 { weight 1 } }";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn shown(d: &[Diagnostic]) -> Vec<String> {
    d.iter().map(ToString::to_string).collect()
}

#[test]
fn the_seeds_example_loads_verbatim() {
    let l = load_str("keepalived.conf", SEED).unwrap_or_else(|d| panic!("{:#?}", shown(&d)));
    assert!(l.warnings.is_empty(), "{:?}", shown(&l.warnings));
    let [vs] = l.virtual_servers.as_slice() else {
        panic!("one virtual server: {:#?}", l.virtual_servers);
    };
    assert_eq!((vs.vip, vs.port), (ip("10.64.1.2"), 10000));
    assert_eq!(vs.scheduler, Scheduler::Rr);
    assert_eq!(vs.kind, ForwardKind::Nat);
    assert_eq!(vs.persistence_timeout, Some(10));
    assert_eq!(vs.protocol, LbProtocol::Tcp);
    assert_eq!(vs.delay_loop, Some(20));
    let rs: Vec<(Ipv4Addr, u16, u32)> = vs
        .real_servers
        .iter()
        .map(|r| (r.ip, r.port, r.weight))
        .collect();
    assert_eq!(
        rs,
        [
            (ip("192.168.1.100"), 8089, 1),
            (ip("192.168.1.101"), 18089, 1)
        ]
    );
    assert!(vs.real_servers.iter().all(|r| r.check.is_none()));
    // Every part maps back to line 1.
    assert_eq!(
        l.locate("load_balancers[0].real_servers[1].weight"),
        Some(Location {
            file: "keepalived.conf".into(),
            line: 1
        })
    );
    // A rule outside the reader (the gateway's) is reported as the
    // reader reports the model's; a path into anything else is not.
    let d = l.diagnose("load_balancers[0].real_servers[1].weight", "too heavy");
    assert_eq!(
        d.map(|d| (d.to_string(), d.severity)),
        Some((
            "keepalived.conf:1: real_servers[1].weight: too heavy".to_string(),
            Severity::Error
        ))
    );
    assert_eq!(l.diagnose("switches[0].name", "x"), None);
    assert_eq!(l.diagnose("load_balancers[1].vip", "x"), None);
}

#[test]
fn the_seeds_example_without_persistence_is_refused_at_its_line() {
    let text = SEED.replace("persistent_timeout 10 ", "");
    let d = load_str("k.conf", &format!("\n{text}")).unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k.conf:2: persistence_timeout: required with lb_algo rr (only sh, dh and mh keep a client on one server by themselves)"
        ]
    );
}

const MAIN: &str = r#"! Configuration File for keepalived
# (both comment styles)
global_defs {
   notification_email {
     ops@example.com
   }
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.64.1.2
    }
}

include conf.d/*.conf
include ../shared/groups.grp
"#;

const PROXY: &str = r#"# the seed's virtual server, written out
virtual_server 10.64.1.2 10000 {
    delay_loop 20
    lb_algo wrr
    lvs_method NAT
    persistence_timeout 10
    protocol TCP
    retry 4                      ! a default for the checkers below

    real_server 192.168.1.100 8089 {
        weight 3
        TCP_CHECK {
            connect_timeout 3
            bindto 192.168.1.2
        }
    }
    real_server 192.168.1.101 18089 {
        weight 1
        notify_down "/usr/local/bin/alert down"
        TCP_CHECK {
            connect_port 18090
            nb_get_retry 2
        }
    }
}
"#;

const WEB: &str = r#"virtual_server group web {
    lb_algo rr
    lb_kind NAT
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    virtualhost www.example.com
    real_server 192.168.2.11 80 {
        HTTP_GET {
            url {
                path /healthz
                digest 9B3A0C85A887A256D6939DA88AABD8CD
                status_code 200-202 204
            }
            url { path /ready }
            connect_timeout 2
            delay_before_retry 5
        }
    }
    real_server 192.168.2.12 80{ weight 2 HTTP_GET { url { path / } virtualhost alt.example.com } }
}
"#;

const MORE: &str = r#"virtual_server 10.64.3.53 53 {
    lb_algo sh
    protocol UDP
    real_server 192.168.3.1 53 {
        MISC_CHECK {
            misc_path "/usr/local/bin/check_dns --server 192.168.3.1"
            misc_timeout 4
            misc_dynamic
        }
    }
}

virtual_server 203.0.113.10 443 {
    lb_algo mh
    lb_kind FNAT
    persistence_timeout
    persistence_granularity 24
    quorum 2
    hysteresis 1
    inhibit_on_failure
    sorry_server 192.168.9.9 443
    ha_suspend
    real_server 192.168.4.1 8443 {
        inhibit_on_failure
        SSL_GET { url { path /tls status_code 200 } }
    }
    real_server 192.168.4.2 8443 { weight 0 }
}
"#;

const GROUPS: &str = "virtual_server_group web {\n    10.64.2.10-12 80\n    10.64.2.20 8080\n}\n";

fn realistic() -> MemSource {
    MemSource::new()
        .with("/etc/keepalived/keepalived.conf", MAIN)
        .with("/etc/keepalived/conf.d/10-proxy.conf", PROXY)
        .with("/etc/keepalived/conf.d/20-web.conf", WEB)
        .with("/etc/keepalived/conf.d/30-more.conf", MORE)
        .with("/etc/keepalived/conf.d/.old.conf", "garbage {")
        .with("/etc/keepalived/conf.d/README", "not a config {")
        .with("/etc/shared/groups.grp", GROUPS)
}

#[test]
fn a_realistic_file_with_includes_a_group_and_every_checker() {
    let l = load(&realistic(), Path::new("/etc/keepalived/keepalived.conf"))
        .unwrap_or_else(|d| panic!("{:#?}", shown(&d)));
    assert_eq!(
        shown(&l.warnings),
        [
            "/etc/keepalived/keepalived.conf:3: ignored: global_defs (global settings (router id, e-mail, script security) have no use here)",
            "/etc/keepalived/keepalived.conf:10: ignored: vrrp_instance (no VRRP: the overlay owns the virtual addresses)",
            "/etc/keepalived/conf.d/10-proxy.conf:14: ignored: bindto (checks leave from the checker's own address)",
            "/etc/keepalived/conf.d/10-proxy.conf:19: ignored: notify_down (notification scripts are not run)",
            "/etc/keepalived/conf.d/30-more.conf:22: ignored: ha_suspend (no VRRP: the checkers never wait for the address to be local)",
        ]
    );
    let keys: Vec<String> = l.virtual_servers.iter().map(|v| v.key()).collect();
    assert_eq!(
        keys,
        [
            "TCP 10.64.1.2:10000",
            "TCP 10.64.2.10:80",
            "TCP 10.64.2.11:80",
            "TCP 10.64.2.12:80",
            "TCP 10.64.2.20:8080",
            "UDP 10.64.3.53:53",
            "TCP 203.0.113.10:443",
        ]
    );
    let vs = &l.virtual_servers;

    // TCP_CHECK, with the block's `retry 4` inherited where not set.
    assert_eq!(vs[0].scheduler, Scheduler::Wrr);
    let t0 = vs[0].real_servers[0].check.as_ref().unwrap().timing();
    assert_eq!((t0.connect_timeout, t0.retry), (Some(3), Some(4)));
    let t1 = vs[0].real_servers[1].check.as_ref().unwrap().timing();
    assert_eq!((t1.connect_port, t1.retry), (Some(18090), Some(2)));
    assert_eq!(vs[0].real_servers[0].weight, 3);

    // The group's members share the block; HTTP_GET with two urls.
    for v in &vs[1..5] {
        assert_eq!(v.real_servers, vs[1].real_servers);
        assert_eq!(v.persistence_granularity, 24);
        assert_eq!(v.persistence_timeout, Some(300));
    }
    let HealthCheck::Http {
        ssl,
        urls,
        virtualhost,
        timing,
    } = vs[1].real_servers[0].check.as_ref().unwrap()
    else {
        panic!("HTTP_GET");
    };
    assert!(!ssl);
    assert_eq!(virtualhost.as_deref(), Some("www.example.com"));
    assert_eq!(urls[0].status_code, [200, 201, 202, 204]);
    assert_eq!(
        urls[0].digest.as_deref(),
        Some("9b3a0c85a887a256d6939da88aabd8cd")
    );
    assert_eq!(urls[1].path, "/ready");
    assert_eq!(
        (timing.connect_timeout, timing.delay_before_retry),
        (Some(2), Some(5))
    );
    // Written on one line, `80{` glued; its own virtualhost wins.
    let HealthCheck::Http { virtualhost, .. } = vs[1].real_servers[1].check.as_ref().unwrap()
    else {
        panic!("HTTP_GET");
    };
    assert_eq!(virtualhost.as_deref(), Some("alt.example.com"));
    assert_eq!(vs[1].real_servers[1].weight, 2);

    // MISC_CHECK with a quoted command line.
    assert_eq!(vs[5].protocol, LbProtocol::Udp);
    let HealthCheck::Misc {
        path,
        timeout,
        dynamic,
        ..
    } = vs[5].real_servers[0].check.as_ref().unwrap()
    else {
        panic!("MISC_CHECK");
    };
    assert_eq!(path, "/usr/local/bin/check_dns --server 192.168.3.1");
    assert_eq!((*timeout, *dynamic), (Some(4), true));

    // Full-NAT, persistence without a value, SSL_GET.
    let v = &vs[6];
    assert_eq!(v.kind, ForwardKind::Fnat);
    assert_eq!(v.scheduler, Scheduler::Mh);
    assert_eq!(v.persistence_timeout, Some(360));
    assert_eq!((v.quorum, v.hysteresis, v.inhibit_on_failure), (2, 1, true));
    assert_eq!(
        v.sorry_server,
        Some(Endpoint {
            ip: ip("192.168.9.9"),
            port: 443
        })
    );
    assert_eq!(v.real_servers[0].inhibit_on_failure, Some(true));
    assert!(matches!(
        v.real_servers[0].check,
        Some(HealthCheck::Http { ssl: true, .. })
    ));
    assert_eq!(v.real_servers[1].weight, 0);

    // Parts map back to where they were written.
    let at = |p: &str| l.locate(p).map(|l| l.to_string());
    assert_eq!(
        at("load_balancers[3].vip").as_deref(),
        Some("/etc/keepalived/../shared/groups.grp:2")
    );
    assert_eq!(
        at("load_balancers[3].real_servers[0].check.urls[0].digest").as_deref(),
        Some("/etc/keepalived/conf.d/20-web.conf:11")
    );
    assert_eq!(
        at("load_balancers[0].real_servers[0].check.retry").as_deref(),
        Some("/etc/keepalived/conf.d/10-proxy.conf:8"),
        "an inherited default is where the block set it"
    );
    assert_eq!(at("load_balancers[9].vip"), None);
}

#[test]
fn a_broken_file_lists_every_problem_at_its_file_and_line() {
    let src = MemSource::new()
        .with(
            "/k/keepalived.conf",
            r#"vrrp_instance VI_1 { state MASTER }
virtual_servers 10.0.0.1 80 { weight 1 }
virtual_server 10.0.0.256 80 {
    real_server 192.168.1.1 80 { weight 1 }
}
virtual_server 10.0.0.2 80 {
    lb_algo rr
    real_server 192.168.1.1 80 { weight -1 }
    real_server 192.168.1.2 8o { weight 1 }
    real_server 192.168.1.3 80 {
        weight 70000
        frobnicate 7 { deep { } }
        SMTP_CHECK { helo_name x }
    }
}
include loop/a.conf
"#,
        )
        .with(
            "/k/loop/a.conf",
            "virtual_server 10.0.0.3 81 {\n  lb_algo sh\n  lb_kind DR\n  real_server 10.1.1.1 81\n}\ninclude b.conf\n",
        )
        .with("/k/loop/b.conf", "\n\ninclude ../keepalived.conf\n");
    let d = load(&src, Path::new("/k/keepalived.conf")).unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "/k/keepalived.conf:1: ignored: vrrp_instance (no VRRP: the overlay owns the virtual addresses)",
            "/k/keepalived.conf:2: unknown section \"virtual_servers\" (virtual_server and virtual_server_group are read, the VRRP sections ignored)",
            "/k/keepalived.conf:3: virtual_server: \"10.0.0.256\" is not an IPv4 address",
            "/k/keepalived.conf:6: persistence_timeout: required with lb_algo rr (only sh, dh and mh keep a client on one server by themselves)",
            "/k/keepalived.conf:8: weight: -1 is negative (0-65535)",
            "/k/keepalived.conf:9: real_server: \"8o\" is not a port",
            "/k/keepalived.conf:11: weight: 70000 is above the largest weight (65535)",
            "/k/keepalived.conf:12: unknown keyword \"frobnicate\" ignored",
            "/k/keepalived.conf:13: SMTP_CHECK: checker not supported (TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK are)",
            "/k/loop/a.conf:3: lb_kind: DR is not supported (yet): NAT and FNAT (full-NAT) are",
            "/k/loop/b.conf:3: include loop: /k/keepalived.conf -> /k/loop/a.conf -> /k/loop/b.conf -> /k/loop/../keepalived.conf",
        ]
    );
    let severities: Vec<Severity> = d.iter().map(|d| d.severity).collect();
    assert_eq!(severities[0], Severity::Warning);
    assert_eq!(severities[7], Severity::Warning);
    assert!(severities.iter().filter(|s| **s == Severity::Error).count() == 9);
}

#[test]
fn model_problems_are_mapped_to_the_keyword_or_the_block() {
    let text = "virtual_server 10.0.0.1 80 {\n lb_algo sh\n persistence_timeout 0\n real_server 10.0.0.1 80 {\n  MISC_CHECK { misc_timeout 0 }\n }\n real_server 10.0.0.2 0\n real_server 10.0.0.2 0\n}\nvirtual_server 10.0.0.1 80 { lb_algo sh\n}\n";
    let d = load_str("k", text).unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:3: persistence_timeout: 0 seconds keeps nothing; leave it out",
            "k:4: real_servers[0].ip: a real server cannot be the virtual address itself",
            "k:5: real_servers[0].check.path: the script is empty",
            "k:5: real_servers[0].check.timeout: must be at least 1 second",
            "k:7: real_servers[1].port: port 0 is not a port",
            "k:8: real_servers[2]: real server 10.0.0.2:0 is listed twice",
            "k:8: real_servers[2].port: port 0 is not a port",
            "k:10: virtual server TCP 10.0.0.1:80 is declared twice",
            "k:10: real_servers: a virtual server needs a real server or a sorry server",
        ]
    );
}

#[test]
fn keyword_details() {
    // Unknown keywords take their line and their block; the rest still reads.
    let l = load_str(
        "k",
        "virtual_server 10.0.0.1 80 { lb_algo sh\n foo bar baz { x { y } }\n real_server 10.0.0.2 80 { weight 5 } }",
    )
    .unwrap();
    assert_eq!(l.virtual_servers[0].real_servers[0].weight, 5);
    assert_eq!(shown(&l.warnings), ["k:2: unknown keyword \"foo\" ignored"]);

    // Netmasks and prefixes; a non-contiguous mask.
    for (g, want) in [("255.255.255.0", Ok(24)), ("/16", Ok(16)), ("32", Ok(32))] {
        let t = format!(
            "virtual_server 10.0.0.1 80 {{ lb_algo sh persistence_granularity {g} real_server 10.0.0.2 80 }}"
        );
        let got = load_str("k", &t).map(|l| l.virtual_servers[0].persistence_granularity);
        assert_eq!(
            got.map_err(|d| shown(&d)),
            want.map_err(|e: &str| vec![e.to_string()])
        );
    }
    let d = load_str(
        "k",
        "virtual_server 10.0.0.1 80 { lb_algo sh persistence_granularity 255.0.255.0 protocol SCTP lb_algo fo lb_kind TUN real_server 10.0.0.2 80 }",
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:1: persistence_granularity: 255.0.255.0 is not a contiguous netmask",
            "k:1: protocol: SCTP is not supported (TCP and UDP are)",
            "k:1: lb_algo: \"fo\" is not supported (rr wrr lc wlc sh dh lblc lblcr sed nq mh)",
            "k:1: lb_kind: TUN is not supported (yet): NAT and FNAT (full-NAT) are",
        ]
    );

    // fwmark virtual servers and members; an unknown group; two checkers.
    let d = load_str(
        "k",
        "virtual_server fwmark 1 { lb_algo sh }\nvirtual_server group nope { lb_algo sh }\nvirtual_server_group g { fwmark 3 }\nvirtual_server 10.0.0.1 80 { lb_algo sh real_server 10.0.0.2 80 {\n TCP_CHECK { }\n MISC_CHECK { misc_path /x }\n uthreshold 5 } }",
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:1: virtual_server fwmark: firewall-mark virtual servers are not supported (give an address and port)",
            "k:2: virtual_server group \"nope\": no virtual_server_group of that name",
            "k:3: fwmark: firewall-mark members are not supported (give an address and port)",
            "k:6: real_server 10.0.0.2 80: MISC_CHECK is a second checker; one checker per real server is run here (TCP_CHECK at line 5 is kept)",
            "k:7: uthreshold: connection thresholds are not supported (the server would take connections past it)",
        ]
    );

    // An optional value that is not a number is still the keyword's.
    let d = load_str(
        "k",
        "virtual_server 10.0.0.1 80 { persistence_timeout -1\n persistent_timeout soon\n real_server 10.0.0.2 80 }",
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:1: persistence_timeout: required with lb_algo wlc (only sh, dh and mh keep a client on one server by themselves)",
            "k:1: persistence_timeout: -1 is negative",
            "k:2: persistent_timeout: \"soon\" is not a number",
        ]
    );

    // Numbers past 64 bits are too large, not "not a number".
    let d = load_str(
        "k",
        "virtual_server 10.0.0.1 99999999999999999999 { lb_algo sh delay_loop 99999999999999999999\n real_server 10.0.0.2 80 { weight 99999999999999999999 }\n real_server 10.0.0.3 80 { weight -99999999999999999999 connect_timeout +5x }\n}",
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:1: virtual_server: 99999999999999999999 is not a port (0-65535)",
            "k:1: delay_loop: 99999999999999999999 is too large",
            "k:2: weight: 99999999999999999999 is above the largest weight (65535)",
            "k:3: weight: -99999999999999999999 is negative (0-65535)",
            "k:3: connect_timeout: \"+5x\" is not a number",
        ]
    );

    // Group ranges cannot multiply past the cap.
    let members: String = (0..20).map(|i| format!("10.{i}.0.0-255 80\n")).collect();
    let d = load_str(
        "k",
        &format!("virtual_server_group big {{\n{members}}}\nvirtual_server group big {{ lb_algo sh real_server 10.99.0.1 80 }}"),
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        ["k:23: more than 4096 virtual servers (groups included); the rest are not read"]
    );

    // Stray and unclosed braces, missing values.
    let d = load_str(
        "k",
        "}\nvirtual_server 10.0.0.1 80 { lb_algo sh real_server 10.0.0.2 80 { weight } \n",
    )
    .unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:1: unexpected \"}\"",
            "k:2: virtual_server: its block is not closed before the end of the input",
            "k:2: weight: missing value (1 value)",
        ]
    );
}

#[test]
fn the_files_are_read_from_disk_with_relative_includes() {
    let dir = std::env::temp_dir().join(format!("lb-ka-disk-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(dir.join("keepalived.conf"), "include conf.d/*.conf\n").unwrap();
    std::fs::write(dir.join("conf.d/seed.conf"), SEED).unwrap();
    let l = load_file(&dir.join("keepalived.conf")).unwrap();
    assert_eq!(l.virtual_servers.len(), 1);
    let missing = dir.join("missing.conf");
    let d = load_file(&missing).unwrap_err();
    assert_eq!(
        shown(&d),
        [format!(
            "{0}: cannot read {0}: no such file",
            missing.display()
        )]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Words the soup is made of: keywords of every block, values good and
/// bad, braces, quotes, comments, includes.
const SOUP: &[&str] = &[
    "virtual_server",
    "virtual_server_group",
    "real_server",
    "group",
    "fwmark",
    "{",
    "}",
    "{",
    "}",
    "10.0.0.1",
    "10.0.0.2-4",
    "10.0.0.300",
    "80",
    "0",
    "65536",
    "-1",
    "x",
    "lb_algo",
    "rr",
    "sh",
    "lb_kind",
    "NAT",
    "FNAT",
    "DR",
    "persistence_timeout",
    "persistent_timeout",
    "weight",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
    "url",
    "path",
    "/",
    "status_code",
    "200-204",
    "digest",
    "misc_path",
    "\"/bin/x a\"",
    "\"open",
    "#",
    "!",
    "include",
    "inc.conf",
    "main.conf",
    "*.conf",
    "global_defs",
    "vrrp_instance",
    "persistence_granularity",
    "255.255.0.0",
    "quorum",
    "sorry_server",
    "protocol",
    "UDP",
    "retry",
    "connect_port",
    "inhibit_on_failure",
    "alpha",
    "ops",
    "80{",
    "}}",
    "\n",
    "\n",
    "\n",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SOUP), 0..120).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// No input panics; what loads passes the model's checks; every
    /// diagnostic names a file that was read and a line in it.
    #[test]
    fn token_soup_never_panics(main in soup(), inc in soup()) {
        let src = MemSource::new().with("/p/main.conf", main.clone()).with("/p/inc.conf", inc.clone());
        let lines = |f: &str| match f {
            "/p/main.conf" => main.split('\n').count(),
            _ => inc.split('\n').count(),
        };
        match load(&src, Path::new("/p/main.conf")) {
            Ok(l) => {
                let mut problems = Vec::new();
                control::lb::check(&l.virtual_servers, BASE, &mut problems);
                prop_assert!(problems.is_empty(), "{problems:?}");
                for w in &l.warnings {
                    prop_assert_eq!(w.severity, Severity::Warning);
                }
            }
            Err(d) => {
                prop_assert!(d.iter().any(|d| d.severity == Severity::Error));
                for x in &d {
                    prop_assert!(x.file.starts_with("/p/"), "{}", x);
                    prop_assert!(usize::try_from(x.line).unwrap() <= lines(&x.file), "{}", x);
                }
            }
        }
    }
}

/// keepalived.conf text for `vs`, every token followed by `sep(i)` (a
/// space, a newline, or a comment and a newline).
fn render(vss: &[VirtualServer], sep: &dyn Fn(usize) -> &'static str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut w = |s: String| words.push(s);
    for vs in vss {
        w(format!("virtual_server {} {} {{", vs.vip, vs.port));
        w(format!("lb_algo {}", vs.scheduler));
        w(format!(
            "lb_kind {}",
            if vs.kind == ForwardKind::Nat {
                "NAT"
            } else {
                "FNAT"
            }
        ));
        w(format!("protocol {}", vs.protocol.upper()));
        if let Some(p) = vs.persistence_timeout {
            w(format!("persistent_timeout {p}"));
        }
        for rs in &vs.real_servers {
            w(format!(
                "real_server {} {} {{ weight {}",
                rs.ip, rs.port, rs.weight
            ));
            if let Some(HealthCheck::Tcp { timing }) = &rs.check {
                w("TCP_CHECK {".into());
                if let Some(t) = timing.connect_timeout {
                    w(format!("connect_timeout {t}"));
                }
                w("}".into());
            }
            w("}".into());
        }
        w("}".into());
    }
    let mut out = String::new();
    for (i, word) in words.iter().flat_map(|l| l.split(' ')).enumerate() {
        out.push_str(word);
        out.push_str(sep(i));
    }
    out
}

fn arb_vs() -> impl Strategy<Value = VirtualServer> {
    let rs = (1u8..=254, 1u16.., 0u32..=65535, prop::option::of(1u32..100)).prop_map(
        |(last, port, weight, timeout)| control::lb::RealServer {
            weight,
            check: timeout.map(|t| HealthCheck::Tcp {
                timing: control::lb::CheckTiming {
                    connect_timeout: Some(t),
                    ..Default::default()
                },
            }),
            ..control::lb::RealServer::new(Ipv4Addr::new(192, 168, 7, last), port)
        },
    );
    (
        1u8..=254,
        1u16..,
        prop::sample::select(Scheduler::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        1u32..100_000,
        prop::collection::vec(rs, 1..4),
    )
        .prop_map(|(last, port, scheduler, fnat, udp, p, rss)| {
            let mut seen = std::collections::HashSet::new();
            let protocol = if udp {
                LbProtocol::Udp
            } else {
                LbProtocol::Tcp
            };
            VirtualServer {
                kind: if fnat {
                    ForwardKind::Fnat
                } else {
                    ForwardKind::Nat
                },
                persistence_timeout: Some(p),
                real_servers: rss
                    .into_iter()
                    .filter(|r| seen.insert((r.ip, r.port)))
                    .collect(),
                ..VirtualServer::new(Ipv4Addr::new(10, 9, 0, last), port, protocol, scheduler)
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Virtual servers written out on one line, one token a line, or with
    /// comments between the tokens, read back equal.
    #[test]
    fn written_out_and_read_back(vss in prop::collection::vec(arb_vs(), 1..4), layout in 0usize..3) {
        let mut seen = std::collections::HashSet::new();
        let vss: Vec<VirtualServer> =
            vss.into_iter().filter(|v| seen.insert((v.protocol, v.vip, v.port))).collect();
        let sep: &dyn Fn(usize) -> &'static str = match layout {
            0 => &|_| " ",
            1 => &|_| "\n",
            _ => &|i| if i % 3 == 0 { " # note {\n" } else { " ! x }\n" },
        };
        let text = render(&vss, sep);
        let l = load_str("k", &text).map_err(|d| shown(&d).join("\n"));
        prop_assert_eq!(l.map(|l| l.virtual_servers), Ok(vss), "{}", text);
    }
}

/// Group ranges are kept as written, not expanded, until a virtual server
/// uses the group: a 4 MiB file of groups that no virtual server uses
/// (each range 256 addresses, about 1.4 billion in all) reads at the cost
/// of its text, and one use still stops at the cap.
#[test]
fn unused_group_ranges_are_not_expanded() {
    let ranges: String = (0..17).map(|i| format!("10.{i}.0.0-255 80\n")).collect();
    let mut text = String::new();
    let mut n = 0;
    let max = usize::try_from(MAX_BYTES).unwrap();
    while text.len() + ranges.len() + 64 < max - 256 {
        text.push_str(&format!("virtual_server_group g{n} {{\n{ranges}}}\n"));
        n += 1;
    }
    assert!(n > 12_000, "{n} groups");
    let t = std::time::Instant::now();
    let l = load_str("k", &text).unwrap_or_else(|d| panic!("{:?}", shown(&d)));
    assert!(l.virtual_servers.is_empty());
    text.push_str("virtual_server group g7 { lb_algo sh real_server 10.99.0.1 80 }\n");
    let d = load_str("k", &text).unwrap_err();
    assert_eq!(d.len(), 1, "{:?}", shown(&d));
    assert!(d[0].message.starts_with("more than 4096 virtual servers"));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

/// A group use gives every member all the virtual server's real servers:
/// past [`parser::MAX_EXPANDED_REAL_SERVERS`] in all, reading stops at
/// that virtual server's line before any is made (255 members x 4,200
/// real servers would be about 1.07 million, the cap 1,048,576).
#[test]
fn group_expansion_is_capped_by_the_real_servers_it_makes() {
    let real_servers = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "real_server 10.{}.{}.{} 80\n",
                    100 + i / 65536,
                    (i / 256) % 256,
                    i % 256
                )
            })
            .collect()
    };
    let text = |n: usize| {
        format!(
            "virtual_server_group g {{\n10.0.0.1-255 80\n}}\n\nvirtual_server group g {{\nlb_algo sh\n{}}}\n",
            real_servers(n)
        )
    };
    let few = load_str("k", &text(4)).unwrap_or_else(|d| panic!("{:?}", shown(&d)));
    assert_eq!(few.virtual_servers.len(), 255);
    assert_eq!(few.virtual_servers[254].real_servers.len(), 4);
    let t = std::time::Instant::now();
    let d = load_str("k", &text(4200)).unwrap_err();
    assert_eq!(
        shown(&d),
        [
            "k:5: more than 1048576 real servers in all (each member of a group has them all); the rest are not read"
        ]
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

/// A value every applied keyword takes without a problem (a keyword new
/// to the tables needs one here).
fn good_value(name: &str) -> &'static str {
    match name {
        "inhibit_on_failure" | "misc_dynamic" => "",
        "lb_algo" | "lvs_sched" => "sh",
        "lb_kind" | "lvs_method" => "NAT",
        "protocol" => "TCP",
        "persistence_granularity" => "24",
        "sorry_server" => "10.0.0.9 80",
        "real_server" => "10.0.0.3 80",
        "virtualhost" => "www.example.com",
        "connect_ip" => "10.0.0.4",
        "connect_port" => "81",
        "TCP_CHECK" => "{ }",
        "HTTP_GET" | "SSL_GET" => "{ url { path / } }",
        "MISC_CHECK" => "{ misc_path /bin/true }",
        "url" => "{ path /b }",
        "path" => "/c",
        "digest" => "0123456789abcdef0123456789abcdef",
        "status_code" => "200-204",
        "misc_path" => "/bin/false",
        "hysteresis" => "0",
        "delay_loop"
        | "persistence_timeout"
        | "persistent_timeout"
        | "quorum"
        | "weight"
        | "connect_timeout"
        | "retry"
        | "nb_get_retry"
        | "delay_before_retry"
        | "misc_timeout" => "3",
        other => panic!("no test value for {other}"),
    }
}

/// Every keyword the tables list as applied is applied: written with a
/// good value in its block (on a line of its own), it loads without a
/// diagnostic. A keyword no arm of the reader handles would be an error
/// ("read but not applied"), where it used to be dropped in silence.
#[test]
fn every_applied_keyword_is_applied() {
    let mut tried = 0;
    for (block, table) in keywords::all() {
        let around = match block {
            "top level" => continue,
            "virtual_server" => "real_server 10.0.0.2 80\n@",
            "real_server" => "real_server 10.0.0.2 80 {\n@\n}",
            "checkers" => "real_server 10.0.0.2 80 {\nTCP_CHECK {\n@\n}\n}",
            "HTTP_GET, SSL_GET" => "real_server 10.0.0.2 80 {\nHTTP_GET {\nurl { path / }\n@\n}\n}",
            "url" => "real_server 10.0.0.2 80 {\nHTTP_GET {\nurl {\npath /\n@\n}\n}\n}",
            "MISC_CHECK" => "real_server 10.0.0.2 80 {\nMISC_CHECK {\nmisc_path /bin/true\n@\n}\n}",
            other => panic!("no test block for {other}"),
        };
        for k in table
            .iter()
            .filter(|k| k.support == keywords::Support::Applied)
        {
            let line = format!("{} {}", k.name, good_value(k.name));
            let text = format!(
                "virtual_server 10.0.0.1 80 {{\nlb_algo sh\n{}\n}}\n",
                around.replace('@', &line)
            );
            let l = load_str("k", &text)
                .unwrap_or_else(|d| panic!("{block} {}: {:?}\n{text}", k.name, shown(&d)));
            assert!(
                l.warnings.is_empty(),
                "{block} {}: {:?}",
                k.name,
                shown(&l.warnings)
            );
            tried += 1;
        }
    }
    assert!(tried > 40, "{tried}");
}

/// Status codes are kept sorted, each once, however the ranges overlap
/// (so a url's list is at most the 500 statuses, whatever the text).
#[test]
fn status_codes_are_sorted_and_each_kept_once() {
    let ranges = "200-299 ".repeat(50);
    let text = format!(
        "virtual_server 10.0.0.1 80 {{ lb_algo sh real_server 10.0.0.2 80 {{
           HTTP_GET {{ url {{ path / status_code 404 204 200-202 201 {ranges} 100-599 }} }} }} }}"
    );
    let l = load_str("k", &text).unwrap_or_else(|d| panic!("{:?}", shown(&d)));
    let Some(HealthCheck::Http { urls, .. }) = &l.virtual_servers[0].real_servers[0].check else {
        panic!("{:?}", l.virtual_servers);
    };
    assert_eq!(urls[0].status_code, (100..=599).collect::<Vec<u16>>());
    let l = load_str("k", &text.replace(&ranges, "").replace("100-599", "")).unwrap();
    let Some(HealthCheck::Http { urls, .. }) = &l.virtual_servers[0].real_servers[0].check else {
        panic!("{:?}", l.virtual_servers);
    };
    assert_eq!(urls[0].status_code, [200, 201, 202, 204, 404]);
}
