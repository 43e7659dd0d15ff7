//! The hot paths, one operation at a time, for counting instructions under valgrind's callgrind.
//!
//! `callgrind CASE N` sets the case up, warms it up, then runs its operation `N` times inside
//! [`measured`]; `benches/callgrind/run.sh` runs it under callgrind with collection on only
//! inside that function, for two values of `N`, and divides the difference by the operations
//! in between. Nothing here reads a clock or depends on scheduling, so the same binary and the
//! same arguments give the same count. The `axum_body_*` cases are axum's `Sse` doing the same
//! work, for a ratio that noise cannot move. `callgrind --list` prints each case with the number of
//! operations one iteration is worth. Only the crate's public API is used.
//!
//!     bash benches/callgrind/run.sh            # compare with benches/callgrind/baseline.txt
//!     bash benches/callgrind/run.sh --update   # rewrite the baseline

use std::{
    convert::Infallible,
    hint::black_box,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Body;
use serde::Serialize;
use tower_sse::{Event, Hub, Parser, SseBody};

/// Subscribers of the topic in `hub_delivery`: one iteration publishes once and delivers to
/// each of them.
const HUB_SUBSCRIBERS: usize = 100;
/// Events per body frame in `body_token` and `body_tiny`.
const BODY_EVENTS: usize = 1000;
/// Iterations run before the measured ones, so that buffers, queues and logs are in their
/// steady state (the hub's log is full and evicting) when counting starts.
const WARM_UP: usize = 300;

/// One operation of a case, ready to run again and again.
type Operation = Box<dyn FnMut()>;

/// A case: its name, how many operations one iteration is worth, and what sets it up.
struct Case {
    name: &'static str,
    operations: usize,
    setup: fn() -> Operation,
}

/// The cases, in the order the script reports them.
const CASES: [Case; 11] = [
    Case {
        name: "encode_token",
        operations: 1,
        setup: encode_token,
    },
    Case {
        name: "encode_tiny",
        operations: 1,
        setup: encode_tiny,
    },
    Case {
        name: "encode_json",
        operations: 1,
        setup: encode_json,
    },
    Case {
        name: "body_token",
        operations: BODY_EVENTS,
        setup: body_token,
    },
    Case {
        name: "body_tiny",
        operations: BODY_EVENTS,
        setup: body_tiny,
    },
    Case {
        name: "boxed_body_token",
        operations: BODY_EVENTS,
        setup: boxed_body_token,
    },
    Case {
        name: "axum_body_token",
        operations: 1,
        setup: axum_body_token,
    },
    Case {
        name: "axum_body_tiny",
        operations: 1,
        setup: axum_body_tiny,
    },
    Case {
        name: "emitter_send",
        operations: 1,
        setup: emitter_send,
    },
    Case {
        name: "hub_delivery",
        operations: HUB_SUBSCRIBERS,
        setup: hub_delivery,
    },
    Case {
        name: "parser_event",
        operations: 1,
        setup: parser_event,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: callgrind --list | callgrind CASE ITERATIONS";
    match args.as_slice() {
        [list] if list == "--list" => {
            for case in &CASES {
                println!("{} {}", case.name, case.operations);
            }
        }
        [name, iterations] => {
            let Some(case) = CASES.iter().find(|case| case.name == name) else {
                eprintln!("unknown case {name:?}; `callgrind --list` names them");
                std::process::exit(2);
            };
            let Ok(iterations) = iterations.parse::<usize>() else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            let mut operation = (case.setup)();
            for _ in 0..WARM_UP {
                operation();
            }
            measured(iterations, operation.as_mut());
        }
        // `cargo bench` runs every bench program with `--bench`: nothing to time here.
        _ if args.iter().any(|arg| arg == "--bench") => {}
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

/// The only code callgrind counts (`--toggle-collect`): `iterations` runs of the operation.
#[inline(never)]
fn measured(iterations: usize, operation: &mut dyn FnMut()) {
    for _ in 0..iterations {
        operation();
    }
}

/// An LLM token: `id`, `event: token` and three characters of data, to its wire bytes.
fn encode_token() -> Operation {
    Box::new(|| {
        black_box(token_event().to_bytes());
    })
}

/// `data: hi`, to its wire bytes.
fn encode_tiny() -> Operation {
    Box::new(|| {
        black_box(tiny_event().to_bytes());
    })
}

/// A chat-completion chunk of about 200 bytes through `json_data`, to its wire bytes.
fn encode_json() -> Operation {
    let chunk = Chunk::new();
    Box::new(move || {
        let event = Event::new()
            .json_data(black_box(&chunk))
            .expect("the chunk serialises");
        black_box(event.to_bytes());
    })
}

/// Token events built inside a stream and written by `SseBody`, as `cargo bench --bench encode`
/// does: one iteration is one frame of `BODY_EVENTS` events.
fn body_token() -> Operation {
    body_of(token_event)
}

/// `data: hi` built inside a stream and written by `SseBody`, `BODY_EVENTS` per frame.
fn body_tiny() -> Operation {
    body_of(tiny_event)
}

/// The token events of `body_token` with the body boxed into `axum::body::Body`, as an axum
/// handler hands it to hyper.
fn boxed_body_token() -> Operation {
    boxed_body_of(token_event)
}

/// The same token events through axum's `Sse`, boxed into `axum::body::Body` as an axum
/// handler returns it: one event per frame (axum writes each event as its own frame).
fn axum_body_token() -> Operation {
    axum_body_of(|| {
        axum::response::sse::Event::default()
            .id(black_box("42"))
            .event(black_box("token"))
            .data(black_box(" to"))
    })
}

/// `data: hi` through axum's `Sse`, one event per frame.
fn axum_body_tiny() -> Operation {
    axum_body_of(|| axum::response::sse::Event::default().data(black_box("hi")))
}

fn token_event() -> Event {
    Event::new()
        .id(black_box("42"))
        .and_then(|event| event.event(black_box("token")))
        .expect("constant fields are valid")
        .data(black_box(" to"))
}

fn tiny_event() -> Event {
    Event::new().data(black_box("hi"))
}

/// An endless stream of `make()` events in an `SseBody` whose frames hold exactly
/// `BODY_EVENTS` of them; one iteration takes one frame.
fn body_of(make: fn() -> Event) -> Operation {
    let event_len = make().to_bytes().len();
    let events = futures::stream::repeat_with(move || Ok::<_, Infallible>(make()));
    let mut body = Box::pin(SseBody::new(events).max_frame_bytes(BODY_EVENTS * event_len));
    Box::new(move || {
        let frame = next_frame(&mut body);
        assert_eq!(frame.len(), BODY_EVENTS * event_len);
        black_box(frame);
    })
}

/// `body_of`, boxed into `axum::body::Body`.
fn boxed_body_of(make: fn() -> Event) -> Operation {
    let event_len = make().to_bytes().len();
    let events = futures::stream::repeat_with(move || Ok::<_, Infallible>(make()));
    let body = SseBody::new(events).max_frame_bytes(BODY_EVENTS * event_len);
    let mut body = Box::pin(axum::body::Body::new(body));
    Box::new(move || {
        let frame = next_frame(&mut body);
        assert_eq!(frame.len(), BODY_EVENTS * event_len);
        black_box(frame);
    })
}

/// An endless stream of `make()` events in axum's `Sse`, as a handler's response body.
fn axum_body_of(make: fn() -> axum::response::sse::Event) -> Operation {
    let events = futures::stream::repeat_with(move || Ok::<_, Infallible>(make()));
    let response =
        axum::response::IntoResponse::into_response(axum::response::sse::Sse::new(events));
    let mut body = Box::pin(response.into_body());
    Box::new(move || {
        black_box(next_frame(&mut body));
    })
}

/// One `try_send` of a tiny event and the body frame that carries it.
fn emitter_send() -> Operation {
    let (emitter, body) = tower_sse::channel(64);
    let mut body = Box::pin(body);
    Box::new(move || {
        emitter
            .try_send(Event::new().data(black_box("hi")))
            .expect("the channel has room");
        let frame = next_frame(&mut body);
        assert_eq!(frame.len(), "data: hi\n\n".len());
        black_box(frame);
    })
}

/// One publish of a tiny event to a topic and its delivery, as a body frame, to each of its
/// subscribers.
fn hub_delivery() -> Operation {
    let hub = Hub::builder().max_events(64).build();
    let topic = hub.topic("callgrind");
    let mut bodies: Vec<_> = (0..HUB_SUBSCRIBERS)
        .map(|_| Box::pin(SseBody::new(topic.subscribe())))
        .collect();
    for body in &mut bodies {
        assert!(poll_frame(body).is_pending(), "a new subscriber waits");
    }
    Box::new(move || {
        futures::FutureExt::now_or_never(topic.publish(Event::new().data(black_box("hi"))))
            .expect("the in-memory hub publishes at once")
            .expect("and never fails");
        for body in &mut bodies {
            black_box(next_frame(body));
        }
        let _ = &hub;
    })
}

/// One token event, as a server writes it, parsed back.
fn parser_event() -> Operation {
    let mut parser = Parser::new();
    Box::new(move || {
        parser
            .feed(black_box(b"id: 42\nevent: token\ndata:  to\n\n"))
            .expect("a valid event");
        let event = parser.next_event().expect("one event");
        black_box(event);
    })
}

fn poll_frame<B>(body: &mut Pin<Box<B>>) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>>
where
    B: Body<Data = Bytes>,
{
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    body.as_mut().poll_frame(&mut cx)
}

/// The data of the frame the body has ready now.
fn next_frame<B>(body: &mut Pin<Box<B>>) -> Bytes
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    match poll_frame(body) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("a data frame"),
        Poll::Ready(Some(Err(err))) => panic!("the body failed: {err:?}"),
        Poll::Ready(None) => panic!("the body ended"),
        Poll::Pending => panic!("the body has no frame ready"),
    }
}

/// A streamed chat-completion chunk, as LLM APIs send them.
#[derive(Serialize)]
struct Chunk {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'static str,
    choices: [Choice; 1],
}

#[derive(Serialize)]
struct Choice {
    index: usize,
    delta: Delta,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta {
    role: &'static str,
    content: &'static str,
}

impl Chunk {
    fn new() -> Self {
        Chunk {
            id: "chatcmpl-9fX2kQ7rV3mN1pL5tW9zB4cD6",
            object: "chat.completion.chunk",
            created: 1_718_035_200,
            model: "gpt-4o-mini-2024-07-18",
            choices: [Choice {
                index: 0,
                delta: Delta {
                    role: "assistant",
                    content: " Hello",
                },
                finish_reason: None,
            }],
        }
    }
}
