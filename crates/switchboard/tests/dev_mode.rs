//! Development mode as an operator meets it: the real binary, started as the README says.
//! Beyond loopback without a JWT key it must refuse to start (exit 64, naming what to set);
//! with `dev_mode = true` it starts and says, in the log and on the page, why tokens are
//! not checked.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

fn switchboard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    // Only what each test sets: no SWITCHBOARD_* from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn beyond_loopback_without_a_key_refuses_to_start() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.10:8880"] {
        let out = switchboard()
            .args(["--listen", listen, "--data-dir", "memory"])
            .output()
            .expect("run switchboard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{listen}: {stderr}");
        assert!(stderr.contains("dev_mode = true"), "{listen}: {stderr}");
        assert!(
            stderr.contains("SWITCHBOARD_JWT_SECRET"),
            "{listen}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{listen}: {stderr}");
    }
    // The same through the environment, as a container would set it.
    let out = switchboard()
        .env("SWITCHBOARD_LISTEN", "0.0.0.0:0")
        .arg("check-config")
        .output()
        .expect("run switchboard");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn explicit_dev_mode_starts_beyond_loopback_and_says_why() {
    let mut child = switchboard()
        .args(["--listen", "0.0.0.0:0", "--data-dir", "memory"])
        .args(["--set", "dev_mode=true"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn switchboard");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    let mut port = None;
    while port.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if line.contains("switchboard listening") {
            port = line
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse::<u16>().ok());
        }
        log.push_str(&line);
        log.push('\n');
    }
    let port = port.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no listening line:\n{log}")
    });
    let info = http_get(port, "/api/session-info");
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("DEVELOPMENT MODE"), "{log}");
    assert!(log.contains("dev_mode = true is set"), "{log}");
    assert!(
        info.contains(r#""devModeReason":"explicit""#),
        "session-info: {info}"
    );
}

/// One GET over loopback, the whole response as text.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
