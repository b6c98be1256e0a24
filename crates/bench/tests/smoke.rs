//! The idle scenario at smoke scale against a real Switchboard in conformance mode.
//!
//! Builds nothing: `SWITCHBOARD_BIN` names the server binary (CI sets it, e.g.
//! `SWITCHBOARD_BIN=target/release/switchboard`). Without it the test says so and passes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bench::idle::{self, IdleConfig};
use tokio_util::sync::CancellationToken;

/// The server process; killed when the test ends, however it ends.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin conformance` on port 0 and learns the bound address from its JSON log.
fn start_server(bin: &str) -> Server {
    let mut child = Command::new(bin)
        .args([
            "conformance",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    // Keeps draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let listen = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["fields"]["listen"].as_str().map(str::to_owned));
            if let Some(addr) = listen {
                let _ = tx.send(addr);
            }
        }
    });
    let mut server = Server {
        child,
        addr: String::new(),
    };
    server.addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server logs its listen address");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_smoke_against_switchboard() {
    let Some(bin) = std::env::var_os("SWITCHBOARD_BIN") else {
        eprintln!("skipped: set SWITCHBOARD_BIN to a switchboard binary to run this test");
        return;
    };
    let server = start_server(&bin.to_string_lossy());
    let config = IdleConfig {
        server_pid: Some(server.child.id()),
        ..IdleConfig::smoke(&format!("http://{}", server.addr), "/e2e", Some("room1"))
    };
    let report = idle::run(&config, CancellationToken::new())
        .await
        .expect("idle run");
    println!("{}", report.markdown());
    assert_eq!(report.failures, 0, "{:?}", report.failure_kinds);
    assert_eq!(
        report.joined, config.clients,
        "every client got its join ack"
    );
    // The conformance server pings every 300 ms: holding 1 s proves pongs work.
    assert_eq!(report.dropped_while_idle, 0);
    assert!(report.pings_answered >= config.clients as u64);
    assert!(report.server_rss_after_bytes.is_some());
}
