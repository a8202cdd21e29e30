//! The `nsxcli` binary end to end without root: a fake agent (a unix
//! socket answering canned replies from `testdata/`) and a fake gateway
//! (HTTP on loopback); exit codes, stdout/stderr, `-c` and arguments,
//! `--json`, capture files, piped commands.

#![allow(clippy::unwrap_used)] // test fixtures; a failure is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/testdata/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn reply_for(req: &Value) -> Value {
    let cmd = req["cmd"].as_str().unwrap_or("");
    match cmd {
        "status" => fixture("status"),
        "switches" => fixture("switches"),
        "arp-table" => fixture("arp_table"),
        "routers" => fixture("routers"),
        "interfaces" => fixture("interfaces"),
        "version" => json!({"api_version": 1, "agent": "nsx-agent", "version": "0.1.0"}),
        "capture" => json!({"api_version": 1, "point": "port", "linktype": 1, "ended": "count",
            "truncated": 0, "frames": [
            {"ts_ns": 1_000_000_000u64, "dir": "tx", "point": "port", "orig_len": 36,
             "data_hex": "0250565644520617 1e54963a08004500".replace(' ', "") + &"00".repeat(20)}]}),
        _ => json!({"api_version": 1, "error": format!("unknown command {cmd:?}")}),
    }
}

/// A temp dir with a fake agent socket served by a thread.
struct FakeAgent {
    dir: PathBuf,
    socket: PathBuf,
}

impl FakeAgent {
    fn start(name: &str) -> FakeAgent {
        let dir = std::env::temp_dir().join(format!("nsxcli-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in BufReader::new(s).lines() {
                        let Ok(line) = line else { return };
                        let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        let _ = writeln!(w, "{}", reply_for(&req));
                    }
                });
            }
        });
        FakeAgent { dir, socket }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nsxcli(args: &[&str], socket: &Path, stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nsxcli"));
    c.args(args)
        .env("TZ", "UTC")
        .env("NSXCLI_SOCKET", socket)
        .env("NSXCLI_HISTORY", "")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        // The program may exit before reading (no agent): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn one_command_with_c_and_as_arguments() {
    let a = FakeAgent::start("c");
    let (code, stdout, stderr) = out(&nsxcli(
        &["-c", "get gateway connection status"],
        &a.socket,
        None,
    ));
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(
        stdout,
        "Public Cloud Gateway : nsx-gw.vmware.local:5555\n\
         Connection Status : ESTABLISHED\n\
         Connection Time : Fri Dec 22 05:22:18 2017\n"
    );
    let (code, stdout, _) = out(&nsxcli(&["get", "vm-network-mode"], &a.socket, None));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "VM-Network-Mode : overlay\nInterface : eth0\n")
    );
    let (code, stdout, _) = out(&nsxcli(
        &["--json", "-c", "get interfaces"],
        &a.socket,
        None,
    ));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["interfaces"][0]["name"], "eth0");
    let (code, _, stderr) = out(&nsxcli(
        &["-c", "get version", "get", "version"],
        &a.socket,
        None,
    ));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn exit_codes() {
    let a = FakeAgent::start("codes");
    let (code, _, stderr) = out(&nsxcli(
        &["-c", "get logical-swtich web-ls mac-table"],
        &a.socket,
        None,
    ));
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "% Unknown command \"get logical-swtich\": did you mean \"get logical-switch\"?\n"
    );
    let (code, _, stderr) = out(&nsxcli(&["-c", "capture port count many"], &a.socket, None));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("Usage: capture port [count <n>]"),
        "{stderr}"
    );
    // The fake agent has no firewall: an API error.
    let (code, _, stderr) = out(&nsxcli(&["-c", "get firewall flows"], &a.socket, None));
    assert_eq!(
        (code, stderr.as_str()),
        (1, "% unknown command \"getflows\"\n")
    );
    let (code, _, stderr) = out(&nsxcli(
        &["-c", "get logical-switch db-ls arp-table"],
        &a.socket,
        None,
    ));
    assert_eq!(code, 1, "{stderr}");
    let gone = a.dir.join("gone.sock");
    let (code, stdout, stderr) = out(&nsxcli(&["-c", "get version"], &gone, None));
    assert_eq!((code, stdout.as_str()), (3, ""));
    assert_eq!(
        stderr,
        format!(
            "% Cannot reach the NSX agent at {}: No such file or directory (is nsx-agent running?)\n",
            gone.display()
        )
    );
    // The interactive shell refuses to start without an agent too.
    let (code, _, stderr) = out(&nsxcli(&[], &gone, Some("get version\n")));
    assert_eq!(code, 3, "{stderr}");
    // --socket wins over the environment.
    let s = a.socket.to_str().unwrap();
    let (code, _, _) = out(&nsxcli(&["--socket", s, "-c", "get version"], &gone, None));
    assert_eq!(code, 0);
    // Bad clap usage is 2 as well.
    let (code, _, _) = out(&nsxcli(&["--bogus"], &a.socket, None));
    assert_eq!(code, 2);
}

#[test]
fn help_and_question_need_no_agent() {
    let gone = std::env::temp_dir().join("nsxcli-no-such.sock");
    let (code, stdout, _) = out(&nsxcli(&["-c", "get ?"], &gone, None));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("  gateway "), "{stdout}");
    let (code, stdout, _) = out(&nsxcli(&["help"], &gone, None));
    assert_eq!(code, 0);
    assert!(stdout.contains("trace port <packet>"));
}

#[test]
fn piped_commands() {
    let a = FakeAgent::start("pipe");
    let (code, stdout, stderr) = out(&nsxcli(
        &[],
        &a.socket,
        Some("get vm-network-mode\nget nothing\nget version\n"),
    ));
    assert_eq!(code, 2, "the first failure's code");
    assert!(
        stdout.starts_with("VM-Network-Mode : overlay\n"),
        "{stdout}"
    );
    assert!(stdout.contains("nsx-agent : 0.1.0\n"), "{stdout}");
    assert!(
        stderr.starts_with("% Unknown command \"get nothing\""),
        "{stderr}"
    );
}

#[test]
fn capture_to_a_file() {
    let a = FakeAgent::start("cap");
    let file = a.dir.join("c.pcap");
    let line = format!("capture port count 1 file {}", file.display());
    let (code, stdout, stderr) = out(&nsxcli(&["-c", &line], &a.socket, None));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "1 packet captured to {} (pcap, linktype ETHERNET)\n",
            file.display()
        )
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
    assert_eq!(bytes.len(), 24 + 16 + 36);
    let line = format!("capture port file {}/no/such/dir/x.pcap", a.dir.display());
    let (code, _, stderr) = out(&nsxcli(&["-c", &line], &a.socket, None));
    assert_eq!(code, 1);
    assert!(stderr.starts_with("% Cannot write "), "{stderr}");
}

#[test]
fn trace_through_the_binary() {
    let a = FakeAgent::start("trace");
    // The fake agent has no `trace`: the frame is built (MACs resolved
    // through status, switches, arp-table, routers) and the error shown.
    let (code, _, stderr) = out(&nsxcli(
        &["-c", "trace port icmp src 192.168.100.3 dst 192.168.99.9"],
        &a.socket,
        None,
    ));
    assert_eq!(
        (code, stderr.as_str()),
        (1, "% unknown command \"trace\"\n")
    );
}

#[test]
fn gateway_mode() {
    let dir = std::env::temp_dir().join(format!("nsxcli-cli-{}-gw", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.token"), "secret\n").unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if !req.contains("Authorization: Bearer secret\r\n") {
                ("401 Unauthorized", json!({"error": "bad token"}))
            } else if req.starts_with("GET /api/v1/instances ") {
                (
                    "200 OK",
                    json!([{"id": "vm1", "hostname": "vm1", "mode": "overlay", "switch": "web-ls",
                                   "ip": "192.168.100.2", "session": "ESTABLISHED", "acked_version": 3}]),
                )
            } else if req.starts_with("GET /api/v1/load-balancers ") {
                ("200 OK", fixture("gw_load_balancers"))
            } else {
                ("404 Not Found", json!({"error": "no such endpoint"}))
            };
            let body = body.to_string();
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let d = dir.to_str().unwrap();
    let nowhere = dir.join("x.sock");
    // nsxcli --gateway --dir DIR --url URL -c CMD (no agent socket).
    let gw = |dir: &str, url: &str, cmd: &str| {
        out(&nsxcli(
            &["--gateway", "--dir", dir, "--url", url, "-c", cmd],
            &nowhere,
            None,
        ))
    };
    let (code, stdout, stderr) = gw(d, &url, "get instances");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("vm1  vm1   overlay  web-ls  192.168.100.2  ESTABLISHED"),
        "{stdout}"
    );
    let (code, stdout, stderr) = gw(d, &url, "get load-balancer udp/10.64.1.3:53");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("\nForwarding : full-NAT (FullNat)\n"),
        "{stdout}"
    );
    let (code, stdout, stderr) = gw(d, &url, "get load-balancer 10.64.1.9:7000");
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            1,
            "",
            "% no virtual server TCP 10.64.1.9:7000 in the gateway's state\n"
        )
    );
    let (code, _, stderr) = gw(d, &url, "get load-balancer 10.64.1.9");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.ends_with("\nUsage: get load-balancer <vip:port>\n"),
        "{stderr}"
    );
    let (code, _, stderr) = gw(d, &url, "get certificates");
    assert_eq!(code, 1);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    std::fs::write(dir.join("admin.token"), "wrong").unwrap();
    let (code, _, stderr) = gw(d, &url, "get instances");
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "% The gateway refused the admin token (HTTP 401): bad token\n"
    );
    let (code, _, stderr) = gw("/nonexistent", &url, "get instances");
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("% Cannot read the gateway's admin token /nonexistent/admin.token"),
        "{stderr}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cport = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(dir.join("admin.token"), "secret").unwrap();
    let (code, _, stderr) = gw(d, &format!("http://127.0.0.1:{cport}"), "get instances");
    assert_eq!(code, 3);
    assert!(
        stderr.contains("Cannot reach the NSX gateway admin API at http://127.0.0.1:"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
