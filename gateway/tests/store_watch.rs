//! A serving gateway notices a change the CLI commits from another store
//! handle at once (the inotify watch of `Gateway::watch_store`), not only
//! at its fallback poll: the poll period here is an hour, so only the watch
//! can wake it.

use std::time::{Duration, Instant};

use gateway::gateway::Gateway;
use gateway::ops;

const STATE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
routers: []
"#;

const STATE2: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0x2388, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
routers: []
"#;

/// Generous for a loaded 2-core machine; the watch takes milliseconds.
const WITHIN: Duration = Duration::from_secs(10);

/// `ops::apply_file` as `nsx-gateway apply` runs it: its own store handle,
/// opened and closed around the commit.
async fn cli_apply(dir: &std::path::Path, yaml: &str, n: u32) {
    let file = dir.join(format!("state{n}.yaml"));
    std::fs::write(&file, yaml).expect("write state");
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ops::apply_file(&d, &file).expect("apply"))
        .await
        .expect("apply task");
}

#[tokio::test]
async fn a_cli_commit_wakes_the_watch_without_the_poll() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(
        &dir,
        "nsx-gw.test.local",
        &["127.0.0.1".parse().expect("ip")],
        false,
    )
    .expect("init");
    let gw = Gateway::open(&dir).expect("open");
    let mut changes = gw.subscribe();
    let watcher = tokio::spawn(gw.clone().watch_store(Duration::from_secs(3600)));
    // Let the watch task start (the poll's first tick fires at once).
    tokio::time::sleep(Duration::from_millis(100)).await;
    changes.borrow_and_update();

    for (n, yaml) in [(1, STATE), (2, STATE2)] {
        let before = *changes.borrow();
        cli_apply(&dir, yaml, n).await;
        let t0 = Instant::now();
        let seen = tokio::time::timeout(WITHIN, changes.changed()).await;
        assert!(
            matches!(seen, Ok(Ok(()))),
            "apply {n}: the gateway did not notice the CLI's commit within {WITHIN:?}"
        );
        let now = *changes.borrow_and_update();
        assert!(now > before, "apply {n}: version {before} -> {now}");
        eprintln!(
            "apply {n}: noticed {:?} after the CLI closed the store",
            t0.elapsed()
        );
    }
    watcher.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
