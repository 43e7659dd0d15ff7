//! A fault-injecting HTTP/1.1 server for the client tests: raw bytes on 127.0.0.1:0, so a test
//! can cut a stream anywhere, send any status and headers, go quiet, or watch the client leave.
#![allow(dead_code)] // each test binary uses a different part of it

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// One step of what the server does on a connection once it has read the request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes (and flush them).
    Write(Vec<u8>),
    /// Pause.
    Sleep(Duration),
    /// Keep the connection open until the client closes it.
    Hold,
}

/// A request as the server read it, and when.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    /// The request line and headers, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    }
}

/// The scripted server: connection `n` plays `scripts[n]` (the last script for any later one).
pub struct Fake {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Signalled each time a held connection sees the client close it.
    pub disconnected: Arc<Notify>,
}

impl Fake {
    pub async fn start(scripts: Vec<Vec<Step>>) -> Fake {
        assert!(!scripts.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let disconnected = Arc::new(Notify::new());
        let (log, gone) = (requests.clone(), disconnected.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let script = scripts[n.min(scripts.len() - 1)].clone();
                tokio::spawn(serve(stream, script, log.clone(), gone.clone()));
            }
        });
        Fake {
            addr,
            requests,
            disconnected,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Vec<Step>,
    log: Arc<Mutex<Vec<Recorded>>>,
    gone: Arc<Notify>,
) {
    stream.set_nodelay(true).unwrap();
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().unwrap().push(request);
    for step in script {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Step::Sleep(pause) => tokio::time::sleep(pause).await,
            Step::Hold => {
                let mut buf = [0; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                gone.notify_one();
                return;
            }
        }
    }
    // The script ends: close the connection.
}

/// Reads the request head and a `content-length` body.
async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let at = Instant::now();
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_lowercase();
    let mut request = Recorded {
        at,
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |value| value.parse().unwrap());
    let mut body = bytes[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    request.body = body;
    Some(request)
}

/// A response head: `status` with these headers, and a body that runs to the end of the
/// connection.
pub fn head(status: &str, content_type: &str) -> Step {
    Step::Write(
        format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n")
            .into_bytes(),
    )
}

/// An event-stream response head with a close-delimited body.
pub fn sse_head() -> Step {
    head("200 OK", "text/event-stream")
}

/// An event-stream response head with a chunked body: cutting the connection before the last
/// chunk is an error, not an end.
pub fn chunked_sse_head() -> Step {
    Step::Write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec(),
    )
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Step {
    let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    Step::Write(bytes)
}

/// Raw body bytes.
pub fn write(data: &str) -> Step {
    Step::Write(data.as_bytes().to_vec())
}
