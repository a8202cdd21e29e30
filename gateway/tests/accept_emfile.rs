//! A listener out of file descriptors neither spins nor dies: with the
//! process's descriptor limit lowered and every descriptor taken, `accept`
//! on the enrollment listener and on the control channel fails with EMFILE;
//! both count the failures, retry only a few times a second, and serve the
//! connections that waited once descriptors are free again.
//!
//! Alone in its test binary: the descriptor limit is the whole process's.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::control_server::ServerOptions;
use gateway::metrics::Listener;
use gateway::pki;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use common::{NAME, meta};

/// The soft and hard `RLIMIT_NOFILE`.
fn nofile() -> (libc::rlim_t, libc::rlim_t) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the call's duration.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    (r.rlim_cur, r.rlim_max)
}

fn set_nofile(soft: libc::rlim_t, hard: libc::rlim_t) {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit, only read by the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Puts the soft limit back when dropped (also when the test panics).
struct Restore(libc::rlim_t, libc::rlim_t);

impl Drop for Restore {
    fn drop(&mut self) {
        set_nofile(self.0, self.1);
    }
}

/// The highest descriptor open in this process.
fn highest_fd() -> libc::rlim_t {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::rlim_t>().ok())
        .max()
        .expect("some descriptor")
}

fn is_emfile(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMFILE)
}

/// Connects to `addr` with one of the `spare` descriptors (another task may
/// take the one freed first: a few tries).
async fn connect_with_spare(spare: &mut Vec<File>, addr: SocketAddr) -> TcpStream {
    for _ in 0..8 {
        spare.pop();
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(e) if is_emfile(&e) => continue,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
    panic!("no descriptor for a client of {addr}");
}

#[tokio::test]
async fn accept_out_of_descriptors_backs_off_counts_and_recovers() {
    let f = common::fixture("emfile").await;
    let (control, _stop) = common::control_channel(&f, ServerOptions::default()).await;
    let (cert, key) = common::enroll_instance(&f, &meta("i-1", "default", 11)).await;
    let agent_tls = common::agent_tls(&f, &cert, &key);
    let https = pki::client_config_trusting(&f.ca_pem).expect("client config");
    let errors = |l: Listener| f.gw.counters().values().accept_errors[l.index()];
    assert_eq!(
        (errors(Listener::Enroll), errors(Listener::Control)),
        (0, 0)
    );

    // Room for 48 more descriptors past the highest, then take every free one.
    let (soft, hard) = nofile();
    let restore = Restore(soft, hard);
    let low = highest_fd() + 48;
    assert!(low < soft, "the limit {soft} is already lower than {low}");
    set_nofile(low, hard);
    let mut spare = Vec::new();
    let exhausted = loop {
        // Holes below the highest descriptor are filled first.
        if spare.len() as libc::rlim_t > low {
            break false;
        }
        match File::open("/dev/null") {
            Ok(file) => spare.push(file),
            Err(e) if is_emfile(&e) => break true,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    };
    assert!(exhausted, "descriptors not exhausted at {low}");
    // Two clients with the last two: each listener's accept now fails.
    let enroll_tcp = connect_with_spare(&mut spare, f.srv.enroll_addr).await;
    let control_tcp = connect_with_spare(&mut spare, control).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (errors(Listener::Enroll) == 0 || errors(Listener::Control) == 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = (errors(Listener::Enroll), errors(Listener::Control));
    assert!(
        before.0 > 0 && before.1 > 0,
        "accept failures counted: {before:?}"
    );
    // While it lasts, each listener retries a few times a second (pauses
    // of 10, 20, 40 ... ms up to 1 s), not in a loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = (errors(Listener::Enroll), errors(Listener::Control));
    let retries = (after.0 - before.0, after.1 - before.1);
    assert!(
        retries.0 <= 25 && retries.1 <= 25,
        "{retries:?} failed accepts in 500 ms"
    );

    // Descriptors are back: the waiting connections are served.
    drop(spare);
    drop(restore);
    let name = || ServerName::try_from(NAME).expect("name");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(https).connect(name(), enroll_tcp),
    )
    .await
    .expect("handshake in time")
    .expect("the enrollment listener accepts again");
    let (status, _, _) = tokio::time::timeout(
        Duration::from_secs(10),
        common::request_on(tls, "GET", "/api/v1/enroll"),
    )
    .await
    .expect("answer in time");
    assert_eq!(status, 405, "served");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(agent_tls).connect(name(), control_tcp),
    )
    .await
    .expect("handshake in time")
    .expect("the control channel accepts again");

    let m = common::scrape(&f).await;
    for l in ["enroll", "control"] {
        let k = format!(r#"nsx_gateway_accept_errors_total{{listener="{l}"}}"#);
        assert!(m.get(&k).is_some_and(|n| *n >= 1.0), "{k} in {m:?}");
    }
}
