//! The examples' `POST /gpt-stream` and `GET /events` under hostile requests: bodies and
//! headers at and past their limits, deep nesting, invalid UTF-8, a 1 MiB `Last-Event-ID`,
//! ids and query values out of range. Every one must get a clear 4xx (or be served when it is
//! within the limits), with no panic and no unbounded allocation in the server.
//!
//! Each test starts the example binaries (axum and hyper) as real processes on free ports,
//! built first by `cargo build --examples` (a no-op when they are fresh), and talks to them
//! over loopback: raw bytes for requests a well-behaved client would not send, hyper for
//! HTTP/2.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{examples_dir, EXAMPLES};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// The largest request body the examples accept.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much the peak RSS of an example may grow over a test: the abuse sends megabytes, a
/// server that buffers them all would grow by as much.
const RSS_SLACK_KIB: u64 = 16 * 1024;

// --- the example processes -----------------------------------------------------------------

/// A running example, killed when dropped.
struct Example {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// Everything it logged.
    log: Arc<Mutex<String>>,
}

impl Example {
    fn start(name: &'static str) -> Example {
        let mut child = Command::new(examples_dir().join(name))
            .env("PORT", "0")
            .env("GPT_DELAY_MS", "0")
            .env("EVENTS_INTERVAL_MS", "20")
            .env("RUST_LOG", "info")
            .env_remove("ALLOWED_ORIGINS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("{name} exited before listening: {}", log.lock().unwrap());
            }
            log.lock().unwrap().push_str(&line);
            if let Some(at) = line.find("listening on http://") {
                let addr = line[at + "listening on http://".len()..].trim();
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log, so the server never blocks on a full pipe.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Example {
            name,
            child,
            addr,
            log,
        }
    }

    /// Peak resident memory of the process so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Checks that a normal request gets its answer streamed.
    async fn answers(&self) {
        let answer = ask(self.addr, Proto::Http1, json_request("hi")).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{} does not answer",
            self.name
        );
        let first = answer.first_event.as_deref();
        assert_eq!(first, Some("data: \"h\"\n\n"), "{}", self.name);
    }

    /// Checks that the server survived: still running and answering, no panic logged, and
    /// its peak RSS within `RSS_SLACK_KIB` of `baseline`.
    async fn check_healthy(&mut self, baseline_kib: u64) {
        let name = self.name;
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{name} exited: {}",
            self.log.lock().unwrap()
        );
        self.answers().await;
        let log = self.log.lock().unwrap();
        assert!(!log.contains("panicked"), "{name} panicked:\n{log}");
        let peak = self.peak_rss_kib();
        assert!(
            peak <= baseline_kib + RSS_SLACK_KIB,
            "{name}: peak RSS {peak} KiB, {baseline_kib} KiB before the abuse"
        );
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `abuse` against each example, then checks the example is healthy.
fn against_each_example<F, Fut>(abuse: F)
where
    F: Fn(&'static str, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in EXAMPLES {
        let mut example = Example::start(name);
        runtime.block_on(async {
            // A first normal request, so the baseline includes what serving costs.
            example.answers().await;
            let baseline = example.peak_rss_kib();
            abuse(name, example.addr).await;
            example.check_healthy(baseline).await;
            eprintln!(
                "abuse: {name}: peak RSS {} KiB, {baseline} KiB before",
                example.peak_rss_kib()
            );
        });
    }
}

// --- clients -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// What came back: the status, the JSON error message if any, and for an event stream its
/// first event.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    error: Option<String>,
    first_event: Option<String>,
}

/// A `POST /gpt-stream` with this JSON body (and the JSON content type).
fn request(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post("/gpt-stream")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// `{"query": query}`.
fn json_request(query: &str) -> Request<Full<Bytes>> {
    request(serde_json::json!({ "query": query }).to_string())
}

/// Sends the request with hyper over a new connection; an event stream is read up to its
/// first event, then dropped.
async fn ask<B>(addr: SocketAddr, proto: Proto, request: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let response = match proto {
        Proto::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(request).await
        }
        Proto::Http2 => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(request).await
        }
    };
    let response = response.unwrap_or_else(|err| panic!("{proto:?}: no response: {err}"));
    let status = response.status();
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value == "text/event-stream");
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes.extend_from_slice(&data);
            }
            if is_stream && bytes.windows(2).any(|w| w == b"\n\n") {
                break;
            }
        }
    };
    timeout(Duration::from_secs(10), read)
        .await
        .expect("the body did not arrive within 10 s");
    answer(status, is_stream, &bytes)
}

fn answer(status: StatusCode, is_stream: bool, body: &[u8]) -> Answer {
    if is_stream {
        let end = body.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
        let first = end.map(|end| String::from_utf8_lossy(&body[..end]).into_owned());
        return Answer {
            status,
            error: None,
            first_event: first,
        };
    }
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("error")?.as_str().map(str::to_owned));
    Answer {
        status,
        error,
        first_event: None,
    }
}

/// Sends `head` and then `body_chunks` bytes of `chunk` over a raw HTTP/1.1 connection while
/// reading the response: the server may answer and close before it has read everything, as
/// it should for a body it refuses. Returns the status of the response.
async fn raw(addr: SocketAddr, head: Vec<u8>, chunk: Vec<u8>, body_chunks: usize) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // Errors are expected once the server has answered and closed.
        if writer.write_all(&head).await.is_err() {
            return;
        }
        for _ in 0..body_chunks {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
        // Dropping the writer would half-close the connection, which servers may take for
        // the client going away; it is dropped when the task is aborted.
        std::future::pending::<()>().await;
    });
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    };
    timeout(Duration::from_secs(10), read)
        .await
        .expect("no response head within 10 s");
    writing.abort();
    let status_line = response.split(|&b| b == b'\r').next().unwrap_or_default();
    let code = status_line
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {:?}", String::from_utf8_lossy(&response)));
    StatusCode::from_u16(code).unwrap()
}

/// A raw request head for `POST /gpt-stream` with these extra header lines.
fn head(extra: &str) -> Vec<u8> {
    format!(
        "POST /gpt-stream HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         {extra}\r\n"
    )
    .into_bytes()
}

/// A JSON body `{"query": "xxx..."}` of exactly `len` bytes.
fn body_of_len(len: usize) -> String {
    let frame = r#"{"query": ""}"#.len();
    format!(r#"{{"query": "{}"}}"#, "x".repeat(len - frame))
}

fn assert_refused(name: &str, proto: Proto, what: &str, answer: &Answer, status: StatusCode) {
    assert_eq!(
        answer.status, status,
        "{name} {proto:?}: {what}: {answer:?}"
    );
    assert!(
        answer.error.as_ref().is_some_and(|error| !error.is_empty()),
        "{name} {proto:?}: {what}: no JSON error message: {answer:?}"
    );
}

// --- body size -----------------------------------------------------------------------------

#[test]
fn body_at_the_limit_is_served_and_one_byte_over_is_413() {
    against_each_example(|name, addr| async move {
        for proto in [Proto::Http1, Proto::Http2] {
            let at_limit = ask(addr, proto, request(body_of_len(MAX_BODY_BYTES))).await;
            assert_eq!(at_limit.status, StatusCode::OK, "{name} {proto:?}");
            assert_eq!(
                at_limit.first_event.as_deref(),
                Some("data: \"x\"\n\n"),
                "{name} {proto:?}"
            );
            let over = ask(addr, proto, request(body_of_len(MAX_BODY_BYTES + 1))).await;
            assert_refused(
                name,
                proto,
                "64 KiB + 1",
                &over,
                StatusCode::PAYLOAD_TOO_LARGE,
            );
        }
    });
}

#[test]
fn over_http2_a_body_far_over_the_limit_gets_a_413_the_client_can_read() {
    // 4 MiB: many times HTTP/2's initial 64 KiB flow-control window, so the server answers
    // while the client is still sending, and must end the request stream so that the client
    // can read the answer (not a reset that loses it). Declared or not, as over HTTP/1.1.
    const LEN: usize = 4 * 1024 * 1024;
    against_each_example(|name, addr| async move {
        let declared = ask(addr, Proto::Http2, request(body_of_len(LEN))).await;
        assert_refused(
            name,
            Proto::Http2,
            "4 MiB declared",
            &declared,
            StatusCode::PAYLOAD_TOO_LARGE,
        );

        let chunks = body_of_len(LEN).into_bytes();
        let chunks: Vec<Bytes> = Bytes::from(chunks)
            .chunks(16 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|chunk| Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk))),
        );
        let undeclared = Request::post("/gpt-stream")
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util::StreamBody::new(frames))
            .unwrap();
        let undeclared = ask(addr, Proto::Http2, undeclared).await;
        assert_refused(
            name,
            Proto::Http2,
            "4 MiB undeclared",
            &undeclared,
            StatusCode::PAYLOAD_TOO_LARGE,
        );
    });
}

#[test]
fn huge_declared_body_is_413_before_it_is_sent() {
    against_each_example(|name, addr| async move {
        // 1 PB declared, 1 KiB sent: the answer must not wait for the rest.
        let status = raw(
            addr,
            head("content-length: 1000000000000000\r\n"),
            vec![b'x'; 1024],
            1,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{name}");
    });
}

#[test]
fn endless_chunked_body_is_413_and_not_buffered() {
    against_each_example(|name, addr| async move {
        // 64 MiB offered in chunks of 16 KiB, without a declared length.
        let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
        chunk.extend_from_slice(&[b'x'; 16 * 1024]);
        chunk.extend_from_slice(b"\r\n");
        let mut start = head("transfer-encoding: chunked\r\n");
        start.extend_from_slice(b"1\r\n{\r\n");
        let status = raw(addr, start, chunk, 4 * 1024).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{name}");
    });
}

#[test]
fn body_shorter_than_declared_is_400() {
    against_each_example(|name, addr| async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let mut request = head("content-length: 100\r\n");
        request.extend_from_slice(br#"{"query":"#);
        writer.write_all(&request).await.unwrap();
        writer.shutdown().await.unwrap(); // the client gives up mid-body
        let mut response = Vec::new();
        timeout(Duration::from_secs(10), reader.read_to_end(&mut response))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        // Either a 400 or a closed connection: no one is there to read an answer.
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{name}: {text}"
        );
    });
}

// --- body content --------------------------------------------------------------------------

#[test]
fn deep_nesting_is_400_and_shallow_nesting_is_served() {
    against_each_example(|name, addr| async move {
        for proto in [Proto::Http1, Proto::Http2] {
            // Nesting beside the query is ignored when a parser can take it...
            let shallow = format!(
                r#"{{"query":"ok","n":{}{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            );
            let served = ask(addr, proto, request(shallow)).await;
            assert_eq!(served.status, StatusCode::OK, "{name} {proto:?}");
            // ...and refused, not a stack overflow, when it goes as deep as 64 KiB allows.
            let depth = (MAX_BODY_BYTES - 32) / 2;
            for nested in [
                format!(
                    r#"{{"query":"ok","n":{}{}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                format!(
                    r#"{{"query":{}"x"{}}}"#,
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
                format!(r#"{{"query":"ok","n":{}"#, r#"{"a":"#.repeat(depth / 5)),
            ] {
                assert!(nested.len() <= MAX_BODY_BYTES);
                let refused = ask(addr, proto, request(nested)).await;
                assert_refused(
                    name,
                    proto,
                    "deep nesting",
                    &refused,
                    StatusCode::BAD_REQUEST,
                );
            }
        }
    });
}

#[test]
fn invalid_utf8_is_400_or_415() {
    against_each_example(|name, addr| async move {
        for proto in [Proto::Http1, Proto::Http2] {
            let body = b"{\"query\": \"\xff\xfe\xc3(\"}".to_vec();
            let refused = ask(addr, proto, request(body)).await;
            assert_refused(
                name,
                proto,
                "invalid UTF-8 body",
                &refused,
                StatusCode::BAD_REQUEST,
            );

            let mut request = json_request("hi");
            request.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_bytes(b"application/json; charset=\xff").unwrap(),
            );
            let refused = ask(addr, proto, request).await;
            let what = "invalid UTF-8 content type";
            assert_refused(
                name,
                proto,
                what,
                &refused,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            );
        }
        // Not even valid in a request line.
        let status = raw(
            addr,
            b"POST /gpt-\xff\xfestream HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            Vec::new(),
            0,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    });
}

#[test]
fn json_of_the_wrong_shape_is_422() {
    against_each_example(|name, addr| async move {
        for body in [
            r#"{"query": 1}"#,
            r#"["query"]"#,
            r#"{"query": {"query": "x"}}"#,
            "null",
        ] {
            let refused = ask(addr, Proto::Http1, request(body)).await;
            assert_refused(
                name,
                Proto::Http1,
                body,
                &refused,
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        for body in [r#"{"query":"#, r#"{"query": 1e999999}"#, "", "\0"] {
            let refused = ask(addr, Proto::Http1, request(body)).await;
            assert_refused(name, Proto::Http1, body, &refused, StatusCode::BAD_REQUEST);
        }
    });
}

// --- headers -------------------------------------------------------------------------------

/// `GET /events`, the resumable feed, with this query string (`?...` or empty).
fn events_request(query: &str) -> Request<Full<Bytes>> {
    Request::get(format!("/events{query}"))
        .header(header::HOST, "127.0.0.1")
        .body(Full::default())
        .unwrap()
}

/// The request line and headers of `request` as HTTP/1.1 bytes, without its body.
fn head_of(request: &Request<Full<Bytes>>) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method(), request.uri()).into_bytes();
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn with_last_event_id(mut request: Request<Full<Bytes>>, id: &[u8]) -> Request<Full<Bytes>> {
    let value = header::HeaderValue::from_bytes(id).unwrap();
    request.headers_mut().append("last-event-id", value);
    request
}

#[test]
fn last_event_id_of_1_mib_is_431_and_of_8_kib_is_served() {
    against_each_example(|name, addr| async move {
        let requests = [|| json_request("hi"), || events_request("")];
        for request in requests {
            let path = request().uri().path().to_owned();
            for proto in [Proto::Http1, Proto::Http2] {
                let served = ask(addr, proto, with_last_event_id(request(), &[b'7'; 8192])).await;
                assert_eq!(served.status, StatusCode::OK, "{name} {path} {proto:?}");
                assert!(served.first_event.is_some(), "{name} {path} {proto:?}");
            }
            let huge = with_last_event_id(request(), &vec![b'7'; 1024 * 1024]);
            // Over HTTP/1.1 the whole head is refused.
            let status = raw(addr, head_of(&huge), Vec::new(), 0).await;
            let too_large = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            assert_eq!(status, too_large, "{name} {path}");
            // Over HTTP/2 the header block comes in a train of CONTINUATION frames, which the
            // server cuts short: 431, or the whole connection refused (GOAWAY
            // ENHANCE_YOUR_CALM, which the client may see as a broken pipe if it was still
            // sending).
            let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            let answer = timeout(Duration::from_secs(10), send.send_request(huge))
                .await
                .expect("no answer within 10 s");
            if let Ok(response) = answer {
                assert_eq!(response.status(), too_large, "{name} {path} Http2");
            }
        }
    });
}

#[test]
fn events_resume_any_unknown_id_with_a_resync_and_refuse_malformed_input_with_400() {
    against_each_example(|name, addr| async move {
        for proto in [Proto::Http1, Proto::Http2] {
            // Ids this server run never issued, whatever their size or shape.
            for id in [
                "99999999999999999999999",
                "18446744073709551615",
                "-1",
                "007",
                "x",
            ] {
                let request = with_last_event_id(events_request(""), id.as_bytes());
                let answer = ask(addr, proto, request).await;
                assert_eq!(answer.status, StatusCode::OK, "{name} {proto:?} {id}");
                let first = answer.first_event.as_deref();
                assert_eq!(
                    first,
                    Some("event: resync\ndata: 0\n\n"),
                    "{name} {proto:?} {id}"
                );
            }
            // Ids no event can carry, or ambiguous.
            let malformed = [
                with_last_event_id(events_request(""), b"\xff\xfe"),
                with_last_event_id(with_last_event_id(events_request(""), b"1"), b"2"),
            ];
            for request in malformed {
                let answer = ask(addr, proto, request).await;
                let what = "malformed Last-Event-ID";
                assert_refused(name, proto, what, &answer, StatusCode::BAD_REQUEST);
            }
            // Query values out of range.
            for query in [
                "?limit=0",
                "?limit=-1",
                "?limit=99999999999999999999999",
                "?retry_ms=18446744073709551616",
                "?retry_ms=soon",
            ] {
                let answer = ask(addr, proto, events_request(query)).await;
                assert_refused(name, proto, query, &answer, StatusCode::BAD_REQUEST);
            }
            // The largest delay is written as it is.
            let query = "?retry_ms=18446744073709551615&limit=1";
            let answer = ask(addr, proto, events_request(query)).await;
            assert_eq!(answer.status, StatusCode::OK, "{name} {proto:?}");
            let first = answer.first_event.as_deref();
            assert_eq!(
                first,
                Some("retry: 18446744073709551615\n\n"),
                "{name} {proto:?}"
            );
        }
    });
}

#[test]
fn too_many_or_too_long_header_lines_are_refused() {
    against_each_example(|name, addr| async move {
        let many: String = (0..1000).map(|i| format!("x-h{i}: {i}\r\n")).collect();
        let status = raw(addr, head(&many), Vec::new(), 0).await;
        assert_eq!(
            status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{name}"
        );

        // A path just under hyper's URI limit (64 KiB) is routed, one over it is 414, and a
        // head over its buffer limit (about 400 KiB) is 431.
        for (len, expected) in [
            (60 * 1024, StatusCode::NOT_FOUND),
            (70 * 1024, StatusCode::URI_TOO_LONG),
            (1024 * 1024, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ] {
            let request = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(len));
            let status = raw(addr, request.into_bytes(), Vec::new(), 0).await;
            assert_eq!(status, expected, "{name}: a path of {len} bytes");
        }

        let status = raw(
            addr,
            head("content-length: 10\r\ncontent-length: 20\r\n"),
            vec![b'x'; 20],
            1,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{name}: conflicting lengths"
        );
    });
}
