//! Encoding throughput: tower-sse against axum's `sse` module on the same events, in one run.
//!
//! Each contender builds a batch of events inside a stream and drains its response body until
//! the end, so the time covers building, encoding and handing the bytes over as body frames.
//! The "limit" row only copies each event's finished wire bytes into a warm buffer: the floor
//! any encoder sits on; "tower-sse-boxed" is this crate's body boxed into `axum::body::Body`
//! and drained frame by frame, as an axum handler hands it to hyper. Before criterion's timing, one pass under a counting allocator gives
//! heap allocations per event; at the end a table gives events/s, MB/s and the ratios.
//!
//!     cargo bench --bench encode

mod support;

use std::{
    convert::Infallible,
    fmt::Debug,
    hint::black_box,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::response::{sse as axum_sse, IntoResponse};
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use futures::{stream, StreamExt};
use http_body::Body;
use serde::Serialize;
use tower_sse::{Event, EventError, SseBody};

/// Criterion samples per benchmark; the summary is the median of exactly these.
const SAMPLES: usize = 20;

/// The events of one case, each built the same way by both contenders.
#[derive(Clone, Copy)]
enum Case {
    /// `data: hi`.
    Tiny,
    /// An LLM token: `id`, `event: token` and three characters of data.
    Token,
    /// A chat-completion chunk of about 200 bytes, serialised with `json_data`.
    Json,
    /// One 64 KiB line of data.
    Large,
    /// 4 KiB of data in 64 lines.
    Lines,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Tiny,
        Case::Token,
        Case::Json,
        Case::Large,
        Case::Lines,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Tiny => "tiny",
            Case::Token => "token",
            Case::Json => "json",
            Case::Large => "64KiB",
            Case::Lines => "4KiB-64-lines",
        }
    }

    /// Events per body: enough that the per-response cost is noise next to the events.
    fn batch(self) -> usize {
        match self {
            Case::Tiny | Case::Token | Case::Json => 1000,
            Case::Large => 32,
            Case::Lines => 256,
        }
    }

    /// The event as a stream of a handler builds it: fallible calls with `?`, their error
    /// going to the body as the stream's error.
    #[inline(always)]
    fn ours(self, input: &Input, i: usize) -> Result<Event, EventError> {
        Ok(match self {
            Case::Tiny => Event::new().data("hi"),
            Case::Token => Event::new().id(&input.ids[i])?.event("token")?.data(TOKEN),
            Case::Json => Event::new().json_data(&Chunk::new(i))?,
            Case::Large => Event::new().data(&input.large),
            Case::Lines => Event::new().data(&input.lines),
        })
    }

    #[inline(always)]
    fn axum(self, input: &Input, i: usize) -> axum_sse::Event {
        let event = axum_sse::Event::default();
        match self {
            Case::Tiny => event.data("hi"),
            Case::Token => event.id(&input.ids[i]).event("token").data(TOKEN),
            Case::Json => event
                .json_data(Chunk::new(i))
                .expect("the chunk serialises"),
            Case::Large => event.data(&input.large),
            Case::Lines => event.data(&input.lines),
        }
    }
}

const TOKEN: &str = " to";

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
    fn new(index: usize) -> Self {
        Chunk {
            id: "chatcmpl-9fX2kQ7rV3mN1pL5tW9zB4cD6",
            object: "chat.completion.chunk",
            created: 1_718_035_200,
            model: "gpt-4o-mini-2024-07-18",
            choices: [Choice {
                index,
                delta: Delta {
                    role: "assistant",
                    content: " Hello",
                },
                finish_reason: None,
            }],
        }
    }
}

/// The inputs every contender shares, made before anything is timed.
struct Input {
    /// `0`, `1`, ..: one id per event of a batch.
    ids: Vec<String>,
    /// 64 KiB without a line break.
    large: String,
    /// 64 lines of 63 characters, each ended by `\n`: 4 KiB.
    lines: String,
}

impl Input {
    fn new() -> Arc<Self> {
        let max_batch = Case::ALL.iter().map(|case| case.batch()).max();
        let line: String = ('a'..='z').cycle().take(63).collect();
        Arc::new(Input {
            ids: (0..max_batch.unwrap_or(0)).map(|i| i.to_string()).collect(),
            large: ('a'..='z').cycle().take(64 * 1024).collect(),
            lines: format!("{line}\n").repeat(64),
        })
    }
}

/// Runs `$run` with `$case` as the constant `$name`, so that each case's body is compiled for
/// its one kind of event, as an app's stream of one kind of event is.
macro_rules! specialised {
    ($case:expr, $name:ident => $run:expr) => {
        specialised!(@arms $case, $name => $run; Tiny, Token, Json, Large, Lines)
    };
    (@arms $case:expr, $name:ident => $run:expr; $($variant:ident),*) => {
        match $case {
            $(Case::$variant => {
                const $name: Case = Case::$variant;
                $run
            })*
        }
    };
}

/// Who turns a batch of events into body frames.
#[derive(Clone, Copy)]
enum Contender {
    TowerSse,
    /// `tower-sse` with its body boxed into `axum::body::Body`, as an axum handler hands it
    /// to hyper.
    TowerSseBoxed,
    Axum,
    /// Copies finished wire bytes only.
    Limit,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::TowerSse,
        Contender::TowerSseBoxed,
        Contender::Axum,
        Contender::Limit,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::TowerSse => "tower-sse",
            Contender::TowerSseBoxed => "tower-sse-boxed",
            Contender::Axum => "axum",
            Contender::Limit => "limit",
        }
    }
}

/// One case ready to run: its inputs and, for the limit, the finished wire bytes.
struct Workload {
    case: Case,
    input: Arc<Input>,
    wire: Vec<Bytes>,
    scratch: BytesMut,
}

impl Workload {
    fn new(case: Case, input: &Arc<Input>) -> Self {
        let wire: Vec<Bytes> = (0..case.batch())
            .map(|i| {
                case.ours(input, i)
                    .expect("the events are valid")
                    .to_bytes()
            })
            .collect();
        let largest = wire.iter().map(Bytes::len).max().unwrap_or(0);
        Workload {
            case,
            input: Arc::clone(input),
            wire,
            scratch: BytesMut::with_capacity(largest),
        }
    }

    /// Runs `events` events (at most one batch for the limit) through one response body;
    /// returns the bytes handed over. Past one batch, the batch's inputs are used again.
    fn run(&mut self, contender: Contender, events: usize) -> usize {
        let case = self.case;
        let input = Arc::clone(&self.input);
        let indices = stream::iter((0..events).map(move |i| i % case.batch()));
        match contender {
            Contender::TowerSse => specialised!(case, CASE => {
                let events = indices.map(move |i| CASE.ours(&input, i));
                drain(tower_sse::response(SseBody::new(events)).into_body())
            }),
            Contender::TowerSseBoxed => specialised!(case, CASE => {
                let events = indices.map(move |i| CASE.ours(&input, i));
                drain(axum::body::Body::new(SseBody::new(events)))
            }),
            Contender::Axum => specialised!(case, CASE => {
                let events = indices.map(move |i| Ok::<_, Infallible>(CASE.axum(&input, i)));
                drain(axum_sse::Sse::new(events).into_response().into_body())
            }),
            Contender::Limit => self
                .wire
                .iter()
                .take(events)
                .map(|wire| {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(wire);
                    black_box(&mut self.scratch).len()
                })
                .sum(),
        }
    }
}

/// Polls every frame out of a body whose events are all ready; returns the data bytes.
fn drain<B>(mut body: B) -> usize
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Debug,
{
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut bytes = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => {
                if let Some(data) = frame.expect("the events encode").data_ref() {
                    bytes += black_box(data).len();
                }
            }
            Poll::Ready(None) => return bytes,
            Poll::Pending => unreachable!("every event of the batch is ready"),
        }
    }
}

/// What one contender did on one case in this run.
struct Figures {
    bytes_per_event: f64,
    /// What each more event costs, the response's own allocations left out.
    allocations_per_event: f64,
    /// Paid once per response body, whatever the number of events.
    allocations_per_response: isize,
    seconds_per_event: f64,
}

impl Figures {
    fn events_per_second(&self) -> f64 {
        1.0 / self.seconds_per_event
    }

    fn megabytes_per_second(&self) -> f64 {
        self.bytes_per_event * self.events_per_second() / 1e6
    }
}

/// Bytes and heap allocations per event. Allocations are counted on a batch and on a double
/// batch, after a warm-up batch: the difference is what the events cost, the rest is the
/// response's.
fn count(workload: &mut Workload, contender: Contender) -> Figures {
    let batch = workload.case.batch();
    workload.run(contender, batch);
    let (bytes, single) = support::measure(|| workload.run(contender, batch));
    let (_, double) = support::measure(|| workload.run(contender, 2 * batch));
    for heap in [single, double] {
        assert!(
            heap.live_bytes <= 0,
            "{} keeps {} bytes after its body ended",
            contender.name(),
            heap.live_bytes
        );
    }
    let per_batch = double.allocations.saturating_sub(single.allocations);
    Figures {
        bytes_per_event: bytes as f64 / batch as f64,
        allocations_per_event: per_batch as f64 / batch as f64,
        allocations_per_response: single.allocations as isize - per_batch as isize,
        seconds_per_event: f64::NAN,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let input = Input::new();
    let mut table = Vec::new();
    for case in Case::ALL {
        let mut workload = Workload::new(case, &input);
        let mut figures = Contender::ALL.map(|contender| count(&mut workload, contender));
        let mut group = criterion.benchmark_group(case.name());
        group
            .sample_size(SAMPLES)
            .throughput(Throughput::Elements(case.batch() as u64));
        for (contender, figures) in Contender::ALL.into_iter().zip(&mut figures) {
            let mut samples = Vec::new();
            group.bench_function(contender.name(), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(workload.run(contender, case.batch()));
                    }
                    let elapsed = start.elapsed();
                    samples.push(elapsed.as_secs_f64() / (iters * case.batch() as u64) as f64);
                    elapsed
                });
            });
            // The last calls are criterion's samples; the ones before were its warm-up.
            let measured = samples.len().saturating_sub(SAMPLES);
            figures.seconds_per_event = median(&mut samples[measured..]);
        }
        group.finish();
        table.push((case, figures));
    }
    criterion.final_summary();
    print_table(&table);
}

/// The summary, as a Markdown table.
fn print_table(table: &[(Case, [Figures; 4])]) {
    println!();
    println!(
        "| case | bytes/event | tower-sse | axum | copy-only limit | tower-sse vs axum (events/s) \
         | boxed into axum's Body vs axum | tower-sse time / limit time \
         | allocations/event tower-sse (+ per response) | allocations/event axum (+ per response) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    // Cases that a criterion filter left out have no timing.
    let timed = table
        .iter()
        .filter(|(_, figures)| figures.iter().all(|f| f.seconds_per_event.is_finite()));
    for (case, [ours, boxed, axum, limit]) in timed {
        let rate = |f: &Figures| {
            format!(
                "{:.2} M/s, {:.0} MB/s",
                f.events_per_second() / 1e6,
                f.megabytes_per_second()
            )
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.2} (+{}) | {:.2} (+{}) |",
            case.name(),
            ours.bytes_per_event,
            rate(ours),
            rate(axum),
            rate(limit),
            axum.seconds_per_event / ours.seconds_per_event,
            axum.seconds_per_event / boxed.seconds_per_event,
            ours.seconds_per_event / limit.seconds_per_event,
            ours.allocations_per_event,
            ours.allocations_per_response,
            axum.allocations_per_event,
            axum.allocations_per_response,
        );
    }
}
