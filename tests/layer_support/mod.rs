//! Harness for the `SseLayer` tests: a hyper server (HTTP/1.1 and HTTP/2) on 127.0.0.1:0 that
//! runs any tower service, and a scripted event-stream app whose body the test feeds by hand.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header::CONTENT_TYPE, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tower::{Layer, Service};
use tower_sse::{BoxError, CloseInfo, SseConnection, SseLayer};

/// Serves a tower service on a fresh loopback port until the test's runtime ends.
pub async fn serve_service<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The frames a scripted body yields.
pub type Feed = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// The body of a scripted response: whatever the test feeds, ending when the feed is dropped.
pub type ScriptedBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, BoxError>>>;

/// One request that reached the scripted app.
pub struct Accepted {
    /// Feeds the response body.
    pub feed: Feed,
    /// The handle the layer put into the request.
    pub connection: SseConnection,
}

impl Accepted {
    /// Feeds one data frame.
    pub async fn send(&self, bytes: impl Into<Bytes>) {
        self.feed.send(Ok(Frame::data(bytes.into()))).await.unwrap();
    }
}

/// Serves `layer` around an app that answers every request with `content_type` and a body the
/// test feeds through the [`Accepted`] it receives.
pub async fn scripted(
    layer: SseLayer,
    content_type: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<Accepted>) {
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let app = tower::service_fn(move |request: Request<Incoming>| {
        let (feed, frames) = mpsc::channel(16);
        let connection = request
            .extensions()
            .get::<SseConnection>()
            .cloned()
            .expect("the layer inserts an SseConnection");
        let _ = accepted_tx.send(Accepted { feed, connection });
        let body: ScriptedBody = StreamBody::new(ReceiverStream::new(frames));
        let response = Response::builder()
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    });
    (serve_service(layer.layer(app)).await, accepted)
}

/// The next request that reached the scripted app.
pub async fn accept(accepted: &mut mpsc::UnboundedReceiver<Accepted>) -> Accepted {
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("no request within 10 s")
        .expect("the server is gone")
}

/// Data frames as the client received them, with when.
#[derive(Debug, Default)]
pub struct Timed {
    pub frames: Vec<(Instant, Bytes)>,
}

impl Timed {
    /// Everything received, in one piece.
    pub fn bytes(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }
}

/// Reads data frames until `deadline`, or until the body ends (returning whether it ended
/// cleanly; a body error fails the test).
pub async fn read_until(body: &mut Incoming, timed: &mut Timed, deadline: Instant) -> bool {
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame()).await;
        match frame {
            Err(_elapsed) => return false,
            Ok(None) => return true,
            Ok(Some(frame)) => {
                if let Ok(data) = frame.expect("body error").into_data() {
                    timed.frames.push((Instant::now(), data));
                }
            }
        }
    }
}

/// Reads data frames until the received bytes end with `suffix`.
pub async fn read_until_suffix(body: &mut Incoming, timed: &mut Timed, suffix: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !timed.bytes().ends_with(suffix) {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{suffix:?} did not arrive in 10 s: {timed:?}"))
            .expect("the body ended early")
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            timed.frames.push((Instant::now(), data));
        }
    }
}

/// Waits for the handle to report, with a time limit.
pub async fn closed_within(connection: &SseConnection, limit: Duration) -> tower_sse::CloseReason {
    tokio::time::timeout(limit, connection.closed())
        .await
        .unwrap_or_else(|_| panic!("the connection did not report within {limit:?}"))
}

/// An `on_close` hook that records what it receives.
pub fn recording_hook() -> (
    impl Fn(CloseInfo) + Send + Sync + 'static,
    Arc<Mutex<Vec<CloseInfo>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let seen = seen.clone();
        move |info| seen.lock().unwrap().push(info)
    };
    (hook, seen)
}
