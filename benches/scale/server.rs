//! Server mode: one kind of event-stream server on a loopback port, counting the streams it
//! holds and answering the parent's commands.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body as AxumBody,
    response::{
        sse::{Event as AxumEvent, KeepAlive, Sse},
        Response,
    },
    routing::get,
    Router,
};
use bytes::Bytes;
use futures::{stream, Stream};
use http_body::{Body, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{io::AsyncBufReadExt, net::TcpListener, sync::broadcast};
use tower_sse::{Event, Hub, SseBody, SseEmitter, SseLayer, Topic};

use crate::{env_number, lock, now_ns, runtime};

/// Events a server publishes between yields in a burst.
const PUBLISH_BATCH: usize = 10;

/// Response bodies alive now: streams the server holds.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// A response body counted in [`OPEN_STREAMS`] while it lives.
struct Counted(AxumBody);

impl Counted {
    fn new(body: AxumBody) -> Self {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        Counted(body)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The least an idle stream's keep-alive can cost on hyper (`hyper-floor`): a body that only
/// waits for its own tokio interval and then hands over `:\n`, served by hyper with no router,
/// layer or channel in between. Counted in [`OPEN_STREAMS`] while it lives.
struct FloorBody {
    tick: tokio::time::Interval,
}

impl FloorBody {
    fn new() -> Self {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        let period = Duration::from_secs(15);
        FloorBody {
            tick: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        }
    }
}

impl Drop for FloorBody {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for FloorBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.tick
            .poll_tick(cx)
            .map(|_| Some(Ok(Frame::data(Bytes::from_static(b":\n")))))
    }
}

/// What the parent's commands act on in a server, per kind.
enum Control {
    /// Nothing to publish to (`axum`).
    None,
    /// The emitters of `tower-sse` streams, kept as a producer would keep them.
    Emitters(Arc<Mutex<Vec<SseEmitter>>>),
    /// The topic every stream subscribes to (`hub`, `hub-bare`).
    Hub(Topic),
    /// The broadcast channel every stream receives from (`axum-broadcast`).
    Broadcast(broadcast::Sender<Arc<str>>),
}

/// One stream of a broadcast receiver as axum events; lagging skips ahead.
fn broadcast_events(
    receiver: broadcast::Receiver<Arc<str>>,
) -> impl Stream<Item = Result<AxumEvent, Infallible>> + Send + 'static {
    stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(text) => return Some((Ok(AxumEvent::default().data(&*text)), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn router(kind: &str) -> (Router, Control) {
    let (router, control) = match kind {
        "tower-sse" => {
            let emitters: Arc<Mutex<Vec<SseEmitter>>> = Arc::default();
            let kept = Arc::clone(&emitters);
            let router = Router::new()
                .route(
                    "/sse",
                    get(move || {
                        let emitters = Arc::clone(&emitters);
                        async move {
                            let (emitter, body) = tower_sse::channel(64);
                            lock(&emitters).push(emitter);
                            tower_sse::response(body)
                        }
                    }),
                )
                .layer(SseLayer::new());
            (router, Control::Emitters(kept))
        }
        // Served without the router (see `serve`); the router is never called.
        "hyper-floor" => (Router::new(), Control::None),
        "axum" => (
            Router::new().route(
                "/sse",
                get(|| async {
                    Sse::new(stream::pending::<Result<AxumEvent, Infallible>>())
                        .keep_alive(KeepAlive::default())
                }),
            ),
            Control::None,
        ),
        "hub" => {
            let hub = Hub::new();
            let topic = hub.topic("scale");
            let subscribe = topic.clone();
            let router = Router::new()
                .route(
                    "/sse",
                    get(move || {
                        let body = SseBody::new(subscribe.subscribe());
                        async move { tower_sse::response(body) }
                    }),
                )
                .layer(SseLayer::new());
            (router, Control::Hub(topic))
        }
        "hub-bare" => {
            let hub = Hub::new();
            let topic = hub.topic("scale");
            let subscribe = topic.clone();
            let router = Router::new().route(
                "/sse",
                get(move || {
                    let body = SseBody::new(subscribe.subscribe());
                    async move { tower_sse::response(body) }
                }),
            );
            (router, Control::Hub(topic))
        }
        "axum-broadcast" => {
            let (sender, _) = broadcast::channel::<Arc<str>>(1024);
            let subscribe = sender.clone();
            let router =
                Router::new().route(
                    "/sse",
                    get(move || {
                        let receiver = subscribe.subscribe();
                        async move {
                            Sse::new(broadcast_events(receiver)).keep_alive(KeepAlive::default())
                        }
                    }),
                );
            (router, Control::Broadcast(sender))
        }
        other => {
            eprintln!("unknown server {other:?}");
            std::process::exit(2);
        }
    };
    let router = router.layer(axum::middleware::map_response(
        |response: Response| async move { response.map(|body| AxumBody::new(Counted::new(body))) },
    ));
    (router, control)
}

/// The servers' scheduler, from `SCALE_SERVER_RUNTIME`: `multi_thread` (the default, 2
/// workers) or `current_thread`.
pub(crate) fn server_scheduler() -> &'static str {
    match std::env::var("SCALE_SERVER_RUNTIME").as_deref() {
        Err(_) | Ok("multi_thread") => "multi_thread",
        Ok("current_thread") => "current_thread",
        Ok(other) => panic!("SCALE_SERVER_RUNTIME={other:?}: multi_thread or current_thread"),
    }
}

fn server_runtime() -> tokio::runtime::Runtime {
    match server_scheduler() {
        "current_thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        _ => runtime(),
    }
}

/// Server mode: serves `kind` on a loopback port and answers the parent's commands on stdin:
/// `count` (streams held), `publish N` (N events, each carrying its publish time).
pub(crate) fn serve(kind: &str) {
    let nodelay = env_number("SCALE_NODELAY", 0) == 1;
    let max_streams = env_number("SCALE_MAX_STREAMS", 1_000) as u32;
    let floor = kind == "hyper-floor";
    server_runtime().block_on(async move {
        let (router, control) = router(kind);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        println!("listening {}", listener.local_addr().expect("the address"));
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(max_streams);
            let builder = Arc::new(builder);
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    // Out of descriptors: wait for some to be released.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = socket.set_nodelay(nodelay);
                let builder = Arc::clone(&builder);
                let socket = TokioIo::new(socket);
                if floor {
                    let service = hyper::service::service_fn(|_| async {
                        Ok::<_, Infallible>(hyper::Response::new(FloorBody::new()))
                    });
                    tokio::spawn(async move {
                        let _ = builder.serve_connection(socket, service).await;
                    });
                } else {
                    let service = TowerToHyperService::new(router.clone());
                    tokio::spawn(async move {
                        let _ = builder.serve_connection(socket, service).await;
                    });
                }
            }
        });
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(command)) = commands.next_line().await {
            let mut words = command.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|n| n.parse::<usize>().ok()),
            ) {
                (Some("count"), _) => println!("count {}", OPEN_STREAMS.load(Ordering::Relaxed)),
                (Some("prune"), _) => {
                    // What a producer does once `closed()` tells it the client left.
                    if let Control::Emitters(emitters) = &control {
                        let mut emitters = lock(emitters);
                        emitters.retain(|emitter| !emitter.is_closed());
                        emitters.shrink_to_fit();
                    }
                    println!("pruned");
                }
                (Some("trim"), _) => {
                    release_free_memory();
                    println!("trimmed");
                }
                (Some("heap"), _) => println!("heap {}", heap_in_use()),
                (Some("publish"), Some(events)) => {
                    let first = publish(&control, events).await;
                    println!("published {first}");
                }
                _ => eprintln!("unknown command {command:?}"),
            }
        }
        // The parent closed our input: done.
        std::process::exit(0);
    });
}

/// Hands the heap's free pages back to the system, so that RSS shows what is still in use:
/// glibc's malloc keeps freed memory in its arenas otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only returns free memory of glibc's own arenas to the system.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// glibc's `struct mallinfo2`, as glibc fills it; two of its fields are read.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(C)]
#[allow(dead_code)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

/// Bytes the program holds allocated right now, over all of glibc's arenas and its mmapped
/// blocks: what a leak would grow, whatever the allocator keeps of the freed memory. 0 where
/// the allocator is not glibc's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> usize {
    extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 (glibc 2.33 and later) only reads the allocator's statistics.
    let info = unsafe { mallinfo2() };
    info.uordblks + info.hblkhd
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> usize {
    0
}

/// Publishes `events` events, `PUBLISH_BATCH` between yields, each carrying its publish time
/// as data; returns the first one's.
async fn publish(control: &Control, events: usize) -> u64 {
    let first = now_ns();
    for n in 0..events {
        let now = if n == 0 { first } else { now_ns() };
        match control {
            Control::None | Control::Emitters(_) => {}
            Control::Hub(topic) => {
                // An in-memory topic publishes without waiting.
                let _ = topic.publish(Event::new().data(now.to_string())).await;
            }
            Control::Broadcast(sender) => {
                let _ = sender.send(now.to_string().into());
            }
        }
        if (n + 1) % PUBLISH_BATCH == 0 {
            tokio::task::yield_now().await;
        }
    }
    first
}
