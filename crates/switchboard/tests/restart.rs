//! One rule for holds across a graceful restart, whatever the transport: the real binary
//! is stopped with SIGTERM and started again on the same data directory, and every hold
//! taken on `/ws` and on Socket.IO before is still there, with the same lock id and
//! `expiresAt`, for its user on a new connection of either transport (README "Holds
//! across a restart").

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The server as its own process (so SIGTERM is the real signal path).
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--set", "coalesce_ms=0"])
        .args(extra.iter().flat_map(|e| ["--set", e]))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    // Drains the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "switchboard listening"
                && let Some(addr) = v["fields"]["listen"].as_str()
            {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server logs its address")
        .parse()
        .expect("an address");
    Server { child, addr }
}

impl Server {
    /// SIGTERM, then the exit (bounded): a graceful stop, exit code 0.
    fn sigterm(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "graceful exit: {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not exit within 15 s of SIGTERM");
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-restart-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A `/ws` client of `user` past its `connected` event.
async fn ws_client(addr: std::net::SocketAddr, user: &str) -> Ws {
    let mut w = ws(addr, &format!("/ws?userId={user}")).await;
    assert!(next_text(&mut w).await.contains("\"connected\""));
    w
}

/// Sends a contract event on `/ws` and returns its ack's data.
async fn ws_call(w: &mut Ws, event: &str, data: Value) -> Value {
    let frame = json!({"event": event, "data": data, "ack": 9});
    w.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
    loop {
        let v: Value = serde_json::from_str(&next_text(w).await).expect("json");
        if v["ack"] == 9 {
            return v["data"].clone();
        }
    }
}

/// A Socket.IO `/realtime` client of `user` past its `connected` event.
async fn sio_client(addr: std::net::SocketAddr, user: &str) -> Ws {
    let mut w = ws(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&userId={user}"),
    )
    .await;
    assert!(next_text(&mut w).await.starts_with('0'));
    w.send(Message::Text("40/realtime,".into()))
        .await
        .expect("send");
    assert!(next_text(&mut w).await.starts_with("40/realtime,{\"sid\""));
    assert!(next_text(&mut w).await.contains("\"connected\""));
    w
}

/// Emits a contract event on Socket.IO with ack id 9 and returns the ack's argument.
async fn sio_call(w: &mut Ws, event: &str, data: Value) -> Value {
    let frame = format!("42/realtime,9[\"{event}\",{data}]");
    w.send(Message::Text(frame.into())).await.expect("send");
    loop {
        let text = next_text(w).await;
        if let Some(args) = text.strip_prefix("43/realtime,9") {
            let args: Value = serde_json::from_str(args).expect("ack args");
            return args[0].clone();
        }
    }
}

#[tokio::test]
async fn sigterm_keeps_every_hold_until_its_expiry_on_every_transport() {
    restart_keeps_holds(&[]).await;
}

/// Without recovery a Socket.IO session ends at the shutdown itself (no window to wait
/// for): its holds are kept all the same.
#[tokio::test]
async fn sigterm_keeps_holds_without_socketio_recovery_too() {
    restart_keeps_holds(&["recovery_window_secs=0"]).await;
}

async fn restart_keeps_holds(extra: &[&str]) {
    let dir = temp_dir();
    let first = start(&dir, extra);

    let mut w = ws_client(first.addr, "ws-buyer").await;
    let ws_hold = ws_call(
        &mut w,
        "lock-tickets",
        json!({"eventId": 1, "categoryId": 2, "quantity": 2}),
    )
    .await;
    assert_eq!(ws_hold["success"], true, "{ws_hold}");
    let mut s = sio_client(first.addr, "sio-buyer").await;
    let sio_hold = sio_call(
        &mut s,
        "lock-tickets",
        json!({"eventId": 1, "categoryId": 3, "quantity": 1}),
    )
    .await;
    assert_eq!(sio_hold["success"], true, "{sio_hold}");

    first.sigterm();
    expect_closed(&mut w, Duration::from_secs(5)).await;
    expect_closed(&mut s, Duration::from_secs(5)).await;

    let second = start(&dir, extra);
    let (status, stats) = get_text(second.addr, "/stats").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).expect("stats");
    assert_eq!(
        stats["ticketLocks"]["locksByStatus"]["active"], 2,
        "both holds survived the restart: {stats}"
    );
    // Each user finds its hold from a new connection, of the other transport too.
    for (user, hold) in [("ws-buyer", &ws_hold), ("sio-buyer", &sio_hold)] {
        let mut w = ws_client(second.addr, user).await;
        let mine = ws_call(&mut w, "get-my-locks", json!({})).await;
        let mut s = sio_client(second.addr, user).await;
        let mine_sio = sio_call(&mut s, "get-my-locks", json!({})).await;
        assert_eq!(mine, mine_sio, "{user}: the same answer on both transports");
        let locks = mine["locks"].as_array().expect("locks");
        assert_eq!(locks.len(), 1, "{user}: {mine}");
        assert_eq!(locks[0]["lockId"], hold["lockId"], "{user}: {mine}");
        assert_eq!(locks[0]["expiresAt"], hold["expiresAt"], "{user}: {mine}");
        assert_eq!(locks[0]["status"], "active", "{user}: {mine}");
    }
    // And the user can still release it.
    let mut w = ws_client(second.addr, "sio-buyer").await;
    let released = ws_call(
        &mut w,
        "unlock-tickets",
        json!({"eventId": 1, "categoryId": 3}),
    )
    .await;
    assert_eq!(released["success"], true, "{released}");
    second.sigterm();
    let _ = std::fs::remove_dir_all(&dir);
}
