//! Shared by the integration tests that run a serving gateway on 127.0.0.1:
//! a fresh gateway directory with enrollment, admin API and metrics
//! listening on ephemeral ports, instance inventory, one-shot HTTP.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use control::model::MacAddr;
use control::proto::InstanceMeta;
use gateway::gateway::Gateway;
use gateway::{ops, pki, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NAME: &str = "nsx-gw.test.local";

/// A serving gateway; its directory goes when the fixture is dropped.
pub struct Fixture {
    pub dir: PathBuf,
    pub gw: Arc<Gateway>,
    pub srv: server::Server,
    pub metrics: SocketAddr,
    pub ca_pem: String,
    pub bootstrap_pem: String,
    pub token: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nsx-gateway init` in a temp directory named after `tag`, then serve.
pub async fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("nsx-gw-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, NAME, &["127.0.0.1".parse().expect("ip")], false).expect("init");
    let gw = Gateway::open(&dir).expect("open");
    let tls = pki::enroll_server_config(&dir).expect("tls");
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let srv = server::start(gw.clone(), tls, lo, lo).await.expect("start");
    let (metrics, _task) = server::start_metrics(gw.clone(), lo)
        .await
        .expect("metrics");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read");
    Fixture {
        ca_pem: read("ca.pem"),
        bootstrap_pem: read("bootstrap.key"),
        token: read("admin.token").trim().to_string(),
        dir,
        gw,
        srv,
        metrics,
    }
}

/// Inventory of a test instance tagged `nsx:network = net`.
pub fn meta(id: &str, net: &str, n: u8) -> InstanceMeta {
    InstanceMeta {
        instance_id: id.into(),
        hostname: format!("{id}.example"),
        os: "debian-12".into(),
        image_id: "ami-0abc".into(),
        tags: BTreeMap::from([("nsx:network".to_string(), net.to_string())]),
        underlay_ip: format!("10.0.0.{n}").parse().expect("ip"),
        nic_mac: MacAddr([6, 0x17, 0x1e, 0x54, 0x96, n]),
    }
}

/// One plain HTTP/1.1 request; returns (status, head, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}
