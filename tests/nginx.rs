//! Streams behind a real nginx reverse proxy (Debian's `nginx`, started by the test on a free
//! loopback port with its own temporary prefix): the headers `SseLayer` adds make nginx pass
//! every event on at once, keep-alives keep nginx's read timeout from cutting an idle stream,
//! and a client that leaves through the proxy is seen by the application.
//!
//! Without nginx installed the tests say so and pass, unless `CI` is set: there a missing
//! nginx is a failure, since `.ci/run` installs it.

mod common;
mod layer_support;

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use common::{Client, Proto};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use layer_support::{accept, closed_within, scripted};
use tower_sse::{CloseReason, SseLayer};

const SSE: &str = "text/event-stream";
const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx that proxies everything to one upstream; killed when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's path, or `None` (after saying why) when it is not installed outside CI.
fn nginx_binary() -> Option<&'static str> {
    if Path::new(NGINX).exists() {
        return Some(NGINX);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{NGINX} is missing: CI must install nginx (apt-get install -y nginx)"
    );
    eprintln!("nginx tests not run: {NGINX} is missing (apt-get install -y nginx)");
    None
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Starts nginx in front of `upstream`, with nginx's default proxy buffering and the given
    /// `proxy_read_timeout`.
    async fn start(binary: &str, upstream: SocketAddr, read_timeout: Duration) -> Nginx {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-nginx-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        // Answered on `/ready` by this nginx alone, so that one started by another test on the
        // same port is never taken for it.
        let marker = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let dir = TempDir(dir);
        // A port picked then released may be taken before nginx binds it: try a few.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
                 error_log {dir}/logs/error.log warn;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n\
                 proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n\
                 uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
                 server {{\n    listen {addr};\n    location = /ready {{ return 200 \"{marker}\"; }}\n\
                 location / {{\n\
                 proxy_pass http://{upstream};\n      proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n      proxy_read_timeout {timeout}ms;\n\
                 }}\n  }}\n}}\n",
                dir = dir.0.display(),
                marker = marker,
                timeout = read_timeout.as_millis(),
            );
            let config_path = dir.0.join("nginx.conf");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new(binary)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(dir.0.join("logs/error.log"));
                    eprintln!("nginx exited ({status}); retrying on another port: {log:?}");
                    break;
                }
                if answers_ready(addr, &marker).await {
                    return Nginx {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start");
    }
}

/// Whether the nginx on `addr` answers `GET /ready` with `marker`.
async fn answers_ready(addr: SocketAddr, marker: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut response = Vec::new();
    let asked = async {
        stream.write_all(b"GET /ready HTTP/1.0\r\n\r\n").await?;
        stream.read_to_end(&mut response).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), asked).await,
        Ok(Ok(_))
    ) && response.ends_with(marker.as_bytes())
}

/// Reads data until `wanted` has arrived or `limit` has passed; returns what arrived and
/// whether the body ended.
async fn read_for(body: &mut Incoming, wanted: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !contains(&bytes, wanted) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return (bytes, false),
            Ok(None) | Ok(Some(Err(_))) => return (bytes, true),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
        }
    }
    (bytes, false)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn every_event_passes_nginx_at_once() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let (upstream, mut accepted) = scripted(SseLayer::new(), SSE).await;
    let nginx = Nginx::start(binary, upstream, Duration::from_secs(60)).await;
    let mut client = Client::connect(nginx.addr, Proto::Http1).await;
    let response = client.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], SSE);
    let app = accept(&mut accepted).await;
    let mut body = response.into_body();
    // One small event at a time, far below nginx's buffer sizes: each must arrive before the
    // next is written, while the stream stays open.
    for n in 0..5 {
        let event = format!("data: piece {n}\n\n");
        app.send(event.clone()).await;
        let (bytes, ended) = read_for(&mut body, event.as_bytes(), Duration::from_secs(5)).await;
        assert!(!ended, "the stream ended early: {bytes:?}");
        assert!(
            contains(&bytes, event.as_bytes()),
            "event {n} was held back by nginx: {bytes:?}"
        );
    }
}

#[tokio::test]
async fn keep_alives_outlast_nginx_read_timeout() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let read_timeout = Duration::from_millis(1500);
    let layer = SseLayer::new().keep_alive(Duration::from_millis(300));
    let (upstream, mut accepted) = scripted(layer, SSE).await;
    let nginx = Nginx::start(binary, upstream, read_timeout).await;
    let mut client = Client::connect(nginx.addr, Proto::Http1).await;
    let response = client.get("/").await;
    let app = accept(&mut accepted).await;
    let mut body = response.into_body();
    // Silent for three read timeouts: the keep-alives hold the proxied stream open.
    let (bytes, ended) = read_for(&mut body, b"never", read_timeout * 3).await;
    assert!(
        !ended,
        "nginx cut an idle stream despite keep-alives: {bytes:?}"
    );
    assert!(
        contains(&bytes, b":\n"),
        "no keep-alive came through: {bytes:?}"
    );
    app.send("data: still here\n\n").await;
    let (bytes, _) = read_for(&mut body, b"data: still here\n\n", Duration::from_secs(5)).await;
    assert!(contains(&bytes, b"data: still here\n\n"));
}

/// The control case: without keep-alives nginx's read timeout ends the idle stream.
#[tokio::test]
async fn without_keep_alives_nginx_cuts_an_idle_stream() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let read_timeout = Duration::from_millis(1000);
    let (upstream, mut accepted) = scripted(SseLayer::new().without_keep_alive(), SSE).await;
    let nginx = Nginx::start(binary, upstream, read_timeout).await;
    let mut client = Client::connect(nginx.addr, Proto::Http1).await;
    let response = client.get("/").await;
    let _app = accept(&mut accepted).await;
    let mut body = response.into_body();
    let (_, ended) = read_for(&mut body, b"never", read_timeout * 5).await;
    assert!(ended, "nginx kept an idle stream past its read timeout");
}

#[tokio::test]
async fn a_client_leaving_through_nginx_reaches_the_application() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let layer = SseLayer::new().keep_alive(Duration::from_millis(200));
    let (upstream, mut accepted) = scripted(layer, SSE).await;
    let nginx = Nginx::start(binary, upstream, Duration::from_secs(60)).await;
    let mut client = Client::connect(nginx.addr, Proto::Http1).await;
    let response = client.get("/").await;
    let app = accept(&mut accepted).await;
    app.send("data: hello\n\n").await;
    let mut body = response.into_body();
    let (bytes, _) = read_for(&mut body, b"data: hello\n\n", Duration::from_secs(5)).await;
    assert!(contains(&bytes, b"data: hello\n\n"));
    assert_eq!(app.connection.close_reason(), None);
    // The client goes away: nginx drops its upstream connection, and the layer reports it.
    drop(body);
    client.connection.abort();
    drop(client);
    let reason = closed_within(&app.connection, Duration::from_secs(10)).await;
    assert_eq!(reason, CloseReason::Disconnected);
}
