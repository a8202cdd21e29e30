//! The agent installer (`/factory_default/...`) over real listeners on
//! 127.0.0.1: plain HTTP and the HTTPS enrollment listener, with fake ELF
//! binaries in a temporary dist directory.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use gateway::install::DistDir;
use gateway::ops;
use gateway::server::InstallListen;

use common::{Fixture, NAME, fixture_with_installer, http_get, https_get};

const CONTROL_PORT: u16 = 5555;
const SCRIPT: &str = "/factory_default/noble_amd64/install_nsx_vm_agent.sh";
const FILES: [&str; 5] = [
    "bootstrap.key",
    "ca.pem",
    "install_nsx_vm_agent.sh",
    "nsx-agent",
    "nsxcli",
];

/// A fake ELF executable of `size` bytes (at least the 20-byte header):
/// 64-bit, little-endian, ET_EXEC, `e_machine` = `machine`; the rest is a
/// pattern that depends on `seed`.
fn fake_elf(machine: u16, size: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&machine.to_le_bytes());
    let mut x = u32::from(seed) | 1;
    while v.len() < size.max(20) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x.to_le_bytes()[0]); // the low byte
    }
    v
}

/// A temporary dist directory with the given files.
struct Dist(PathBuf);

impl Dist {
    fn new(tag: &str, files: &[(&str, Vec<u8>)]) -> Dist {
        let d = std::env::temp_dir().join(format!("nsx-dist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        for (name, bytes) in files {
            std::fs::write(d.join(name), bytes).expect("write");
        }
        Dist(d)
    }

    fn amd64(tag: &str, agent_size: usize) -> Dist {
        Dist::new(
            tag,
            &[
                ("nsx-agent", fake_elf(0x3E, agent_size, 1)),
                ("nsxcli", fake_elf(0x3E, 4096, 2)),
            ],
        )
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.0.join(name)).expect("read dist")
    }
}

impl Drop for Dist {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lo0() -> InstallListen {
    InstallListen::Explicit(vec!["127.0.0.1:0".parse().expect("addr")])
}

async fn serving(tag: &str, dist: &Dist) -> Fixture {
    fixture_with_installer(tag, DistDir::Explicit(dist.0.clone()), lo0(), CONTROL_PORT)
        .await
        .expect("start")
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// SHA-256 of the DER of the (single) certificate in `pem`, decoded here
/// without the gateway's helpers.
fn ca_der_sha256(pem: &str) -> String {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("base64");
    sha256_hex(&der)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A one-line text/plain error body.
fn text_error(head: &str, body: &[u8]) -> String {
    assert_eq!(
        header(head, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let s = String::from_utf8(body.to_vec()).expect("utf8");
    assert!(s.ends_with('\n') && s.lines().count() == 1, "{s:?}");
    s.trim_end().to_string()
}

/// `SHA256SUMS` as name -> hash, checking its format.
fn parse_sums(body: &[u8]) -> BTreeMap<String, String> {
    let text = std::str::from_utf8(body).expect("utf8");
    let mut names = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (hash, name) = line.split_once("  ").expect("<hash>  <name>");
        assert_eq!(hash.len(), 64, "{line}");
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        names.push(name.to_string());
        out.insert(name.to_string(), hash.to_string());
    }
    assert!(text.ends_with('\n'));
    assert_eq!(names, FILES, "exactly these files, sorted by name");
    out
}

/// Every file of `dir` through `get`, then SHA256SUMS checked against them.
async fn fetch_all<F, Fut>(get: F, dir: &str) -> BTreeMap<String, Vec<u8>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (u16, String, Vec<u8>)>,
{
    let mut got = BTreeMap::new();
    for f in FILES.iter().chain(&["SHA256SUMS"]) {
        let (st, head, body) = get(format!("/factory_default/{dir}/{f}")).await;
        assert_eq!(st, 200, "{f}: {head}");
        let ct = header(&head, "content-type").expect("content type");
        let want = match *f {
            "install_nsx_vm_agent.sh" => "text/x-shellscript",
            "nsx-agent" | "nsxcli" => "application/octet-stream",
            "ca.pem" | "bootstrap.key" => "application/x-pem-file",
            _ => "text/plain; charset=utf-8",
        };
        assert_eq!(ct, want, "{f}");
        assert_eq!(
            header(&head, "content-length").and_then(|l| l.parse().ok()),
            Some(body.len()),
            "{f}"
        );
        got.insert(f.to_string(), body);
    }
    let sums = parse_sums(&got["SHA256SUMS"]);
    for f in FILES {
        assert_eq!(sums[f], sha256_hex(&got[f]), "SHA256SUMS line of {f}");
    }
    got
}

/// Runs `sha256sum -c` over the downloaded files (skipped without sha256sum).
fn sha256sum_check(tag: &str, files: &BTreeMap<String, Vec<u8>>) {
    let d = Dist::new(tag, &[]);
    for (name, bytes) in files {
        std::fs::write(d.0.join(name), bytes).expect("write");
    }
    match std::process::Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&d.0)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "sha256sum -c: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("sha256sum not run: {e}"),
    }
}

fn install_addr(f: &Fixture) -> SocketAddr {
    *f.srv.install_addrs.first().expect("an install listener")
}

#[tokio::test]
async fn serves_the_installer_over_http() {
    let dist = Dist::amd64("http", 64 * 1024);
    let f = serving("inst-http", &dist).await;
    let addr = install_addr(&f);
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    // The list, with and without the trailing slash.
    for p in ["/factory_default/", "/factory_default"] {
        let (st, head, body) = http_get(addr, "GET", p).await;
        assert_eq!(st, 200, "{head}");
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            "bookworm_amd64\ntrixie_amd64\njammy_amd64\nnoble_amd64\n"
        );
    }

    // The script: every token replaced with this request's values.
    let (st, head, body) = http_get(addr, "GET", SCRIPT).await;
    assert_eq!(st, 200, "{head}");
    let script = String::from_utf8(body).expect("utf8");
    assert!(!script.contains("@NSX_"), "a token is left");
    let ca_hash = ca_der_sha256(&f.ca_pem);
    for line in [
        "NSX_GW_ADDR=\"127.0.0.1\"".to_string(),
        format!("NSX_GW_NAME=\"{NAME}\""),
        format!("NSX_CA_SHA256=\"{ca_hash}\""),
        format!("NSX_INSTALL_PORT=\"{}\"", addr.port()),
        format!("NSX_ENROLL_PORT=\"{}\"", f.srv.enroll_addr.port()),
        format!("NSX_CONTROL_PORT=\"{CONTROL_PORT}\""),
        "NSX_DISTRO=\"noble\"".to_string(),
        "NSX_ARCH=\"amd64\"".to_string(),
        format!("NSX_GW_VERSION=\"{}\"", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(script.lines().any(|l| l == line), "no line {line}");
    }
    // A query string is ignored.
    let (st, _, again) = http_get(addr, "GET", &format!("{SCRIPT}?v=1")).await;
    assert_eq!((st, again), (200, script.clone().into_bytes()));

    // Every file, SHA256SUMS consistent with them, and `sha256sum -c` passes.
    let got = fetch_all(
        |p| async move { http_get(addr, "GET", &p).await },
        "jammy_amd64",
    )
    .await;
    assert_eq!(got["nsx-agent"], dist.read("nsx-agent"));
    assert_eq!(got["nsxcli"], dist.read("nsxcli"));
    assert_eq!(got["ca.pem"], f.ca_pem.as_bytes());
    assert_eq!(got["bootstrap.key"], f.bootstrap_pem.as_bytes());
    assert!(
        String::from_utf8_lossy(&got["install_nsx_vm_agent.sh"]).contains("NSX_DISTRO=\"jammy\"")
    );
    sha256sum_check("http-check", &got);

    // Errors: one line of text/plain.
    let (st, head, body) = http_get(
        addr,
        "GET",
        "/factory_default/trusty_amd64/install_nsx_vm_agent.sh",
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        text_error(&head, &body),
        "unsupported distribution/architecture \"trusty_amd64\"; supported: bookworm_amd64, trixie_amd64, jammy_amd64, noble_amd64"
    );
    let (st, head, body) = http_get(addr, "GET", "/factory_default/noble_amd64/passwd").await;
    assert_eq!(st, 404);
    let msg = text_error(&head, &body);
    for name in FILES.iter().chain(&["SHA256SUMS"]) {
        assert!(msg.contains(name), "{msg}");
    }
    let (st, head, body) = http_get(addr, "POST", SCRIPT).await;
    assert_eq!(st, 405);
    assert_eq!(header(&head, "allow"), Some("GET"));
    text_error(&head, &body);
    let (st, _, _) = http_get(addr, "PUT", "/factory_default/").await;
    assert_eq!(st, 405);
    for p in [
        "/factory_default/noble_amd64/../noble_amd64/ca.pem",
        "/factory_default/noble_amd64/%63a.pem",
        "/factory_default/noble_amd64//ca.pem",
        "//factory_default/noble_amd64/ca.pem",
        "/factory_default/noble_arm64/ca.pem",
        "/factory_default/noble_amd64/ca.pem/",
        "/etc/passwd",
        "/",
        "/api/v1/enroll",
    ] {
        let (st, head, body) = http_get(addr, "GET", p).await;
        assert_eq!(st, 404, "{p}");
        text_error(&head, &body);
    }

    // Counted by file and status.
    let (st, _, body) = http_get(f.metrics, "GET", "/metrics").await;
    assert_eq!(st, 200);
    let text = String::from_utf8(body).expect("utf8");
    for line in [
        "nsx_gateway_installer_requests_total{file=\"install_nsx_vm_agent.sh\",status=\"200\"} 3",
        "nsx_gateway_installer_requests_total{file=\"nsx-agent\",status=\"200\"} 1",
        "nsx_gateway_installer_requests_total{file=\"SHA256SUMS\",status=\"200\"} 1",
        "nsx_gateway_installer_requests_total{file=\"install_nsx_vm_agent.sh\",status=\"405\"} 0",
    ] {
        let (series, n) = line.rsplit_once(' ').expect("line");
        let found = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or("0");
        assert_eq!(found, n, "{series} in\n{text}");
    }
    assert!(text.contains("nsx_gateway_installer_requests_total{file=\"other\",status=\"404\"} "));
    assert!(
        text.contains("nsx_gateway_installer_requests_total{file=\"other\",status=\"405\"} 2\n")
    );
}

#[tokio::test]
async fn serves_the_installer_over_https_verified_against_the_ca() {
    let dist = Dist::amd64("https", 1024);
    let f = serving("inst-https", &dist).await;
    let ea = f.srv.enroll_addr;
    let ca = f.ca_pem.clone();

    let (st, _, body) = https_get(ea, &ca, "GET", "/factory_default/").await;
    assert_eq!(st, 200);
    assert_eq!(
        body,
        b"bookworm_amd64\ntrixie_amd64\njammy_amd64\nnoble_amd64\n"
    );
    let got = fetch_all(
        |p| {
            let ca = ca.clone();
            async move { https_get(ea, &ca, "GET", &p).await }
        },
        "bookworm_amd64",
    )
    .await;
    assert_eq!(got["nsx-agent"], dist.read("nsx-agent"));
    let script = String::from_utf8(got["install_nsx_vm_agent.sh"].clone()).expect("utf8");
    assert!(!script.contains("@NSX_"));
    // On 8443 the install port is the first install listener's.
    let port = install_addr(&f).port();
    assert!(script.contains(&format!("NSX_INSTALL_PORT=\"{port}\"\n")));
    assert!(script.contains(&format!("NSX_ENROLL_PORT=\"{}\"\n", ea.port())));
    sha256sum_check("https-check", &got);

    // Same script bytes over both listeners (same local address).
    let (_, _, plain) = http_get(
        install_addr(&f),
        "GET",
        "/factory_default/bookworm_amd64/install_nsx_vm_agent.sh",
    )
    .await;
    assert_eq!(plain, got["install_nsx_vm_agent.sh"]);

    // GET only; enrollment untouched.
    let (st, head, _) = https_get(ea, &ca, "POST", SCRIPT).await;
    assert_eq!(st, 405);
    assert_eq!(header(&head, "allow"), Some("GET"));
    let (st, _, body) = https_get(ea, &ca, "POST", "/api/v1/enroll").await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed enrollment request")),
        "{v}"
    );
    let (st, _, _) = https_get(ea, &ca, "GET", "/api/v1/enroll").await;
    assert_eq!(st, 405);
    let (st, _, _) = https_get(ea, &ca, "GET", "/factory_default/trusty_amd64/ca.pem").await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn bootstrap_rotation_is_served() {
    let dist = Dist::amd64("rotate", 100);
    let f = serving("inst-rotate", &dist).await;
    let addr = install_addr(&f);
    let key_path = "/factory_default/trixie_amd64/bootstrap.key";
    let sums_path = "/factory_default/trixie_amd64/SHA256SUMS";
    let (_, _, k1) = http_get(addr, "GET", key_path).await;
    let (_, _, s1) = http_get(addr, "GET", sums_path).await;
    assert_eq!(k1, f.bootstrap_pem.as_bytes());
    assert_eq!(parse_sums(&s1)["bootstrap.key"], sha256_hex(&k1));

    ops::rotate_bootstrap(&f.dir).expect("rotate");
    let (st, _, k2) = http_get(addr, "GET", key_path).await;
    assert_eq!(st, 200);
    assert_ne!(k2, k1, "the rotated key is served");
    assert_eq!(
        k2,
        std::fs::read(f.dir.join("bootstrap.key")).expect("read")
    );
    let (_, _, s2) = http_get(addr, "GET", sums_path).await;
    let (s1, s2) = (parse_sums(&s1), parse_sums(&s2));
    assert_eq!(s2["bootstrap.key"], sha256_hex(&k2));
    assert_eq!(s1["nsx-agent"], s2["nsx-agent"]);
    // And over HTTPS.
    let (_, _, k3) = https_get(f.srv.enroll_addr, &f.ca_pem, "GET", key_path).await;
    assert_eq!(k3, k2);
}

#[tokio::test]
async fn large_binary_is_served_intact() {
    let size = 8 * 1024 * 1024 + 123;
    let dist = Dist::amd64("large", size);
    let f = serving("inst-large", &dist).await;
    let want = sha256_hex(&dist.read("nsx-agent"));
    let p = "/factory_default/noble_amd64/nsx-agent";
    let (st, _, body) = http_get(install_addr(&f), "GET", p).await;
    assert_eq!((st, body.len()), (200, size));
    assert_eq!(sha256_hex(&body), want);
    let (st, _, body) = https_get(f.srv.enroll_addr, &f.ca_pem, "GET", p).await;
    assert_eq!((st, body.len()), (200, size));
    assert_eq!(sha256_hex(&body), want);
    // Concurrent downloads share the one buffer.
    let a = install_addr(&f);
    let (r1, r2) = tokio::join!(http_get(a, "GET", p), http_get(a, "GET", p));
    assert_eq!(sha256_hex(&r1.2), want);
    assert_eq!(sha256_hex(&r2.2), want);
}

async fn start_error(tag: &str, dist: DistDir, listen: InstallListen) -> String {
    match fixture_with_installer(tag, dist, listen, CONTROL_PORT).await {
        Ok(_) => panic!("{tag}: started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_dist_directories_are_startup_errors() {
    // A non-ELF nsx-agent.
    let d = Dist::new(
        "notelf",
        &[
            ("nsx-agent", b"#!/bin/sh\necho hi\n".to_vec()),
            ("nsxcli", fake_elf(0x3E, 64, 1)),
        ],
    );
    let e = start_error("inst-notelf", DistDir::Explicit(d.0.clone()), lo0()).await;
    let agent = d.0.join("nsx-agent");
    assert!(e.contains(&agent.display().to_string()), "{e}");
    assert!(e.contains("not an ELF"), "{e}");

    // Mixed architectures.
    let d = Dist::new(
        "mixed",
        &[
            ("nsx-agent", fake_elf(0x3E, 64, 1)),
            ("nsxcli", fake_elf(0xB7, 64, 2)),
        ],
    );
    let e = start_error("inst-mixed", DistDir::Explicit(d.0.clone()), lo0()).await;
    assert!(e.contains("is amd64 but") && e.contains("is arm64"), "{e}");
    assert!(e.contains(&d.0.join("nsxcli").display().to_string()), "{e}");

    // An unsupported architecture (32-bit ARM is not even 64-bit: RISC-V then).
    let d = Dist::new(
        "riscv",
        &[
            ("nsx-agent", fake_elf(0xF3, 64, 1)),
            ("nsxcli", fake_elf(0xF3, 64, 2)),
        ],
    );
    let e = start_error("inst-riscv", DistDir::Explicit(d.0.clone()), lo0()).await;
    assert!(
        e.contains("unsupported architecture") && e.contains("0xf3"),
        "{e}"
    );

    // A missing binary.
    let d = Dist::new("missing", &[("nsx-agent", fake_elf(0x3E, 64, 1))]);
    let e = start_error("inst-missing", DistDir::Explicit(d.0.clone()), lo0()).await;
    assert!(
        e.contains(&format!("no nsxcli in {}", d.0.display())),
        "{e}"
    );

    // An explicit install address that cannot be bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let d = Dist::amd64("taken", 64);
    let e = start_error(
        "inst-taken",
        DistDir::Explicit(d.0.clone()),
        InstallListen::Explicit(vec![taken_addr]),
    )
    .await;
    assert!(e.contains(&taken_addr.to_string()), "{e}");
    drop(taken);
}

#[tokio::test]
async fn missing_default_dist_answers_503() {
    let empty = Dist::new("empty", &[]);
    let f = fixture_with_installer(
        "inst-503",
        DistDir::Default(empty.0.clone()),
        lo0(),
        CONTROL_PORT,
    )
    .await
    .expect("a defaulted dist directory without binaries still serves");
    let addr = install_addr(&f);
    for file in [
        "install_nsx_vm_agent.sh",
        "nsx-agent",
        "nsxcli",
        "SHA256SUMS",
    ] {
        let (st, head, body) =
            http_get(addr, "GET", &format!("/factory_default/noble_amd64/{file}")).await;
        assert_eq!(st, 503, "{file}");
        let msg = text_error(&head, &body);
        assert!(
            msg.starts_with(&format!(
                "installer not available: no nsx-agent in {}: ",
                empty.0.display()
            )),
            "{msg}"
        );
    }
    let (st, _, _) = http_get(addr, "GET", "/factory_default/").await;
    assert_eq!(st, 503);
    // The trust anchor is still served.
    let (st, _, body) = http_get(addr, "GET", "/factory_default/noble_amd64/ca.pem").await;
    assert_eq!((st, body), (200, f.ca_pem.clone().into_bytes()));
}

#[tokio::test]
async fn installer_listeners_off_and_default() {
    let dist = Dist::amd64("off", 64);
    let f = fixture_with_installer(
        "inst-off",
        DistDir::Explicit(dist.0.clone()),
        InstallListen::Off,
        CONTROL_PORT,
    )
    .await
    .expect("start");
    assert!(f.srv.install_addrs.is_empty());
    // Still answered on 8443, told the default install port.
    let (st, _, body) = https_get(f.srv.enroll_addr, &f.ca_pem, "GET", SCRIPT).await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("NSX_INSTALL_PORT=\"8080\"\n"));
    drop(f);

    // Default: port 8080 on the SAN's IP (127.0.0.1 here), unless that
    // port is taken on this machine (then skipped, not an error).
    let f = fixture_with_installer(
        "inst-default",
        DistDir::Explicit(dist.0.clone()),
        InstallListen::Default,
        CONTROL_PORT,
    )
    .await
    .expect("start");
    let want: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    if f.srv.install_addrs.is_empty() {
        assert!(
            std::net::TcpListener::bind(want).is_err(),
            "127.0.0.1:8080 was free but not bound"
        );
    } else {
        assert_eq!(f.srv.install_addrs, [want]);
        let (st, _, _) = http_get(want, "GET", "/factory_default/").await;
        assert_eq!(st, 200);
    }
}

#[test]
fn serve_refuses_a_bad_dist_and_off_with_addresses() {
    let dist = Dist::new(
        "cli",
        &[
            ("nsx-agent", b"MZ".to_vec()),
            ("nsxcli", fake_elf(0x3E, 64, 1)),
        ],
    );
    let dir = std::env::temp_dir().join(format!("nsx-gw-it-inst-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, NAME, &[], false).expect("init");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--dir",
            dir.to_str().expect("utf8 path"),
            "--listen-enroll",
            "127.0.0.1:0",
            "--listen-api",
            "127.0.0.1:0",
            "--listen-control",
            "127.0.0.1:0",
            "--listen-metrics",
            "off",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_nsx-gateway"))
            .args(&args)
            .output()
            .expect("run nsx-gateway")
    };
    let o = run(&[
        "--dist",
        dist.0.to_str().expect("utf8"),
        "--listen-install",
        "off",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}: not an ELF",
            Path::new(&dist.0).join("nsx-agent").display()
        )),
        "{err}"
    );
    let o = run(&["--listen-install", "off", "--listen-install", "127.0.0.1:0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--listen-install off cannot be combined"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request the install listener's HTTP layer refuses (a body above its
/// 4 KiB limit, before any routing) is counted as `listener="install"`,
/// not as an installer request.
#[tokio::test]
async fn refused_install_requests_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dist = Dist::amd64("refused", 1024);
    let f = serving("inst-refused", &dist).await;
    let mut tcp = tokio::net::TcpStream::connect(install_addr(&f))
        .await
        .expect("connect");
    tcp.write_all(format!("GET {SCRIPT} HTTP/1.1\r\nContent-Length: 5000\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    let (st, _, body) = common::http(f.metrics, "GET", "/metrics", None, "").await;
    assert_eq!(st, 200);
    let series = |listener: &str| {
        format!(
            "nsx_gateway_http_requests_refused_total{{listener=\"{listener}\",reason=\"body_too_large\"}} "
        )
    };
    assert!(
        body.contains(&format!("{}1\n", series("install"))),
        "{body}"
    );
    assert!(body.contains(&format!("{}0\n", series("enroll"))), "{body}");
    assert!(
        !body.contains("nsx_gateway_installer_requests_total{"),
        "a refused request is not an installer request: {body}"
    );
}
