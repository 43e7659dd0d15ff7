//! Event streams at scale over real loopback sockets: how many one server process holds, what
//! each costs, and how fast one publish reaches all of them; HTTP/1.1 and HTTP/2 side by side,
//! against axum's `Sse` in the same run.
//!
//! One program in three roles: the parent (this program run plainly) starts servers and
//! clients as child processes (this program again, with `--serve KIND` or `--client`), so that
//! each process stays under the open-files limit and the clients' work is not charged to the
//! server. Every socket is on 127.0.0.1; every child ends when the parent closes its stdin.
//!
//! Servers (hyper-util's auto connection builder, tokio with 2 workers, HTTP/2 by prior
//! knowledge or HTTP/1.1, at most `SCALE_MAX_STREAMS` streams per HTTP/2 connection):
//!
//! * `tower-sse`: `SseLayer` (keep-alive every 15 s) around a `tower_sse::channel` body whose
//!   `SseEmitter` the server keeps;
//! * `axum`: axum's `Sse` with `KeepAlive::default()` (15 s) over a stream that never yields;
//! * `hub`: `SseLayer` around an `SseBody` of a subscriber of one `Hub` topic;
//! * `axum-broadcast`: axum's `Sse` with its keep-alive over a `tokio::sync::broadcast`
//!   receiver, one per stream.
//!
//! Each response body is counted while it lives, so the parent can confirm that every stream
//! reached the server and that every stream was released. Scenarios (`SCALE_SCENARIOS`, a
//! comma-separated subset of `idle,broadcast,sustained,latency`):
//!
//! * `idle`: N idle streams per server: RSS per stream, idle CPU over `SCALE_IDLE_SECONDS`, and
//!   RSS after they all left, against the RSS before they came;
//! * `broadcast`: N hub subscribers (and N axum `Sse` over broadcast): the same figures, then
//!   `SCALE_PUBLISHES` single publishes, each timed from publish to receipt at every client
//!   (p50, p99, and the last byte);
//! * `sustained`: `SCALE_SUSTAINED_SUBSCRIBERS` subscribers, `SCALE_SUSTAINED_EVENTS` events
//!   published back to back (ten at a time between yields): deliveries per second until the
//!   last client has the last event;
//! * `latency`: `SCALE_LATENCY_SUBSCRIBERS` subscribers of the hub and as many of axum over
//!   broadcast, both servers up at once, one event every 100 ms to each, interleaved;
//!   publish-to-receipt p50/p99, with and without `TCP_NODELAY` on the server's sockets.
//!
//! The whole run stops after `SCALE_TIME_LIMIT` seconds (default 900) whatever happens.
//! `SCALE_CYCLES` (default 1) repeats the coming and leaving of the streams, with the RSS after
//! each cycle, so that memory kept at its high-water mark can be told from a leak.
//!
//! Publish times travel in the event data (nanoseconds of the system clock), so a client in
//! another process computes the latency with the same clock. Defaults are small for a quick
//! run (about a minute); the full size, run through the wrapper that raises the open-files
//! limit, one scenario at a time (each a minute or two; BENCHMARKS.md lists them all):
//!
//!     bash benches/scale.sh                  # quick: a few thousand streams
//!     SCALE_SCENARIOS=idle SCALE_PROTOCOLS=h2 SCALE_STREAMS_H2=100000 SCALE_IDLE_SECONDS=15 \
//!       SCALE_SETTLE_SECONDS=2 bash benches/scale.sh
//!     SCALE_SCENARIOS=sustained SCALE_SUSTAINED_SUBSCRIBERS=10000 SCALE_SUSTAINED_EVENTS=1000 \
//!       bash benches/scale.sh

use std::{
    convert::Infallible,
    io::{BufRead, BufReader, Lines, Write},
    net::SocketAddr,
    pin::Pin,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
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
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{broadcast, Semaphore},
};
use tower_sse::{Event, Hub, SseBody, SseEmitter, SseLayer, Topic};

/// Streams each client process opens before the baseline reading, so that it includes the
/// runtime's and the allocator's warm-up.
const WARM_UP: usize = 200;
/// Connections a client opens at once.
const CONCURRENT_OPENS: usize = 64;
/// Events a server publishes between yields in a burst.
const PUBLISH_BATCH: usize = 10;
/// How long the parent waits for clients to receive what was published.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--serve") {
        return serve(args.get(at + 1).map(String::as_str).unwrap_or_default());
    }
    if let Some(at) = args.iter().position(|arg| arg == "--client") {
        return client(&args[at + 1..]);
    }
    parent();
}

// ---------------------------------------------------------------------------------------------
// The parent: orchestration and figures.

/// The settings of one run, from the environment.
struct Settings {
    protocols: Vec<Protocol>,
    scenarios: Vec<String>,
    idle_kinds: Vec<String>,
    broadcast_kinds: Vec<String>,
    streams_h2: usize,
    streams_h1: usize,
    per_connection: usize,
    clients: usize,
    cycles: usize,
    idle: Duration,
    publishes: usize,
    sustained_subscribers: usize,
    sustained_events: usize,
    latency_subscribers: usize,
    latency_events: usize,
    fd_limit: usize,
}

impl Settings {
    fn from_env() -> Self {
        let fd_limit = open_files_limit();
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_owned())
                .split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        };
        Settings {
            protocols: list("SCALE_PROTOCOLS", "h1,h2")
                .iter()
                .filter_map(|name| Protocol::parse(name))
                .collect(),
            scenarios: list("SCALE_SCENARIOS", "idle,broadcast,sustained,latency"),
            idle_kinds: list("SCALE_IDLE_SERVERS", "tower-sse,axum"),
            broadcast_kinds: list("SCALE_BROADCAST_SERVERS", "hub,axum-broadcast"),
            streams_h2: env_number("SCALE_STREAMS_H2", 2_000),
            streams_h1: env_number("SCALE_STREAMS_H1", 1_000),
            per_connection: env_number("SCALE_PER_CONNECTION", 100).max(1),
            clients: env_number("SCALE_CLIENTS", 2).max(1),
            cycles: env_number("SCALE_CYCLES", 1).max(1),
            idle: Duration::from_secs(env_number("SCALE_IDLE_SECONDS", 2) as u64),
            publishes: env_number("SCALE_PUBLISHES", 2),
            sustained_subscribers: env_number("SCALE_SUSTAINED_SUBSCRIBERS", 1_000),
            sustained_events: env_number("SCALE_SUSTAINED_EVENTS", 100).min(1_000),
            latency_subscribers: env_number("SCALE_LATENCY_SUBSCRIBERS", 200),
            latency_events: env_number("SCALE_LATENCY_EVENTS", 20),
            fd_limit,
        }
    }

    /// `wanted` streams over `protocol`, capped to what the open-files limit lets the server
    /// hold (one descriptor per HTTP/1.1 stream, one per HTTP/2 connection).
    fn streams(&self, protocol: Protocol, wanted: usize) -> usize {
        let spare = self.fd_limit.saturating_sub(500);
        match protocol {
            Protocol::Http1 => wanted.min(spare),
            Protocol::Http2 => wanted.min(spare * self.per_connection),
        }
    }

    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "h1" => Some(Protocol::Http1),
            "h2" => Some(Protocol::Http2),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }
}

fn parent() {
    let settings = Settings::from_env();
    // However the children behave, the run ends: leaving closes their inputs, which ends them.
    let limit = Duration::from_secs(env_number("SCALE_TIME_LIMIT", 900) as u64);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("scale: stopped after the time limit of {limit:?} (SCALE_TIME_LIMIT)");
        std::process::exit(1);
    });
    println!(
        "scale: open-files limit {}, {} client processes, {} streams per HTTP/2 connection",
        settings.fd_limit, settings.clients, settings.per_connection
    );
    let mut publish_rows = Vec::new();
    if settings.runs("idle") || settings.runs("broadcast") {
        println!();
        println!(
            "| scenario | proto | server | streams | at server | RSS before | RSS open | \
             RSS/stream | idle CPU | idle writes/s | RSS after leaving | after malloc_trim |"
        );
        println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    }
    for scenario in ["idle", "broadcast"] {
        if !settings.runs(scenario) {
            continue;
        }
        let kinds = if scenario == "idle" {
            &settings.idle_kinds
        } else {
            &settings.broadcast_kinds
        };
        let publishes = if scenario == "idle" {
            0
        } else {
            settings.publishes
        };
        for &protocol in &settings.protocols {
            let wanted = match protocol {
                Protocol::Http1 => settings.streams_h1,
                Protocol::Http2 => settings.streams_h2,
            };
            let streams = settings.streams(protocol, wanted);
            for kind in kinds {
                let figures = population(&settings, protocol, kind, streams, publishes);
                println!("{}", figures.row(scenario, protocol, kind));
                publish_rows.extend(figures.publish_row(protocol, kind));
            }
        }
    }
    if !publish_rows.is_empty() {
        println!();
        println!(
            "One publish at a time, each reaching every stream; per publish: streams reached, \
             publish-to-receipt p50 and p99, publish to the last byte, the server's write calls \
             and CPU time (ms)."
        );
        println!();
        println!(
            "| proto | server | streams | reached | p50 | p99 | last byte | writes | CPU ms |"
        );
        println!("|---|---|--:|--:|--:|--:|--:|--:|--:|");
        for row in publish_rows {
            println!("{row}");
        }
    }
    if settings.runs("sustained") {
        println!();
        println!("| proto | server | subscribers | events | deliveries | seconds | deliveries/s | vs axum |");
        println!("|---|---|--:|--:|--:|--:|--:|--:|");
        for &protocol in &settings.protocols {
            let subscribers = settings.streams(protocol, settings.sustained_subscribers);
            let mut rates = Vec::new();
            for kind in ["hub", "axum-broadcast"] {
                let (deliveries, seconds) = sustained(&settings, protocol, kind, subscribers);
                let rate = deliveries as f64 / seconds;
                rates.push(rate);
                println!(
                    "| {} | {kind} | {subscribers} | {} | {deliveries} | {seconds:.3} | {rate:.0} | |",
                    protocol.name(),
                    settings.sustained_events,
                );
            }
            if let [hub, axum] = rates[..] {
                println!(
                    "| {} | hub / axum | | | | | | {:.2}x |",
                    protocol.name(),
                    hub / axum
                );
            }
        }
    }
    if settings.runs("latency") {
        println!();
        println!("| proto | server TCP_NODELAY | server | events received | p50 | p99 | max |");
        println!("|---|---|---|--:|--:|--:|--:|");
        for &protocol in &settings.protocols {
            for nodelay in [false, true] {
                latency(&settings, protocol, nodelay);
            }
        }
    }
}

/// A child process driven by lines on its stdin, answering with lines on its stdout.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn start(args: &[String], envs: &[(&str, String)]) -> Self {
        let mut command = Command::new(std::env::current_exe().expect("the program's path"));
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("a child process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("its output")).lines();
        Process {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's input is open");
        writeln!(stdin, "{line}").expect("the child reads its input");
        stdin.flush().expect("the child reads its input");
    }

    /// The next output line that starts with `word`, without it.
    fn expect(&mut self, word: &str) -> String {
        for line in self.stdout.by_ref() {
            let line = line.expect("the child's output");
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().to_owned();
            }
        }
        panic!("the child ended before answering {word:?}");
    }

    /// Asks and reads the answer's first field as a number.
    fn ask_number(&mut self, question: &str, word: &str) -> u64 {
        self.send(question);
        let answer = self.expect(word);
        answer
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing its input ends the child; it is this program's own child, waited for here.
        drop(self.stdin.take());
        if self.child.wait_timeout(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `Child::wait` with a deadline, polling.
trait WaitTimeout {
    fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for Child {
    fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    fn start(kind: &str, nodelay: bool) -> Self {
        let mut process = Process::start(
            &["--serve".to_owned(), kind.to_owned()],
            &[("SCALE_NODELAY", u8::from(nodelay).to_string())],
        );
        let addr = process.expect("listening").parse().expect("an address");
        Server { process, addr }
    }

    fn open_streams(&mut self) -> u64 {
        self.process.ask_number("count", "count")
    }

    /// Waits until the server holds exactly `count` streams; returns what it holds at the end.
    fn wait_for_streams(&mut self, count: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let open = self.open_streams();
            if open == count || Instant::now() > deadline {
                return open;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Publishes `events` events; returns the publish time of the first, in ns.
    fn publish(&mut self, events: usize) -> u64 {
        self.process
            .ask_number(&format!("publish {events}"), "published")
    }
}

/// Client processes holding `streams` streams to one server between them.
struct Clients {
    processes: Vec<(Process, usize)>,
}

impl Clients {
    fn open(
        settings: &Settings,
        protocol: Protocol,
        addr: SocketAddr,
        streams: usize,
        processes: usize,
    ) -> Self {
        let processes = processes.clamp(1, streams.max(1));
        let mut started = Vec::new();
        for index in 0..processes {
            let share = streams / processes + usize::from(index < streams % processes);
            if share == 0 {
                continue;
            }
            let process = Process::start(
                &[
                    "--client".to_owned(),
                    protocol.name().to_owned(),
                    addr.to_string(),
                    share.to_string(),
                    settings.per_connection.to_string(),
                ],
                &[],
            );
            started.push((process, share));
        }
        let mut clients = Clients { processes: started };
        for (process, share) in &mut clients.processes {
            let opened: usize = process
                .expect("opened")
                .parse()
                .expect("a count of streams");
            if opened < *share {
                eprintln!("a client opened {opened} of {share} streams");
            }
            *share = opened;
        }
        clients
    }

    fn streams(&self) -> usize {
        self.processes.iter().map(|(_, n)| n).sum()
    }

    /// Waits until every client received `per_stream` events on each of its streams since the
    /// last reset; returns the events received and the time of the last one (ns).
    fn wait_for(&mut self, per_stream: u64) -> (u64, u64) {
        let mut received = 0;
        let mut last = 0;
        for (process, share) in &mut self.processes {
            process.send(&format!(
                "wait {} {}",
                per_stream * *share as u64,
                DELIVERY_TIMEOUT.as_millis()
            ));
            let answer = process.expect("reached");
            let mut fields = answer
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            received += fields.next().unwrap_or(0);
            last = last.max(fields.next().unwrap_or(0));
        }
        (received, last)
    }

    /// Clears what the clients recorded, without reading it.
    fn reset(&mut self) {
        for (process, _) in &mut self.processes {
            process.send("reset");
            process.expect("reset");
        }
    }

    /// The latencies (µs) the clients recorded since the last call; clears them and the counts.
    fn take_latencies(&mut self) -> Vec<u64> {
        let mut all = Vec::new();
        for (process, _) in &mut self.processes {
            process.send("report");
            let answer = process.expect("report");
            all.extend(answer.split(',').filter_map(|n| n.parse::<u64>().ok()));
        }
        all
    }
}

/// What one population of streams cost one server.
struct Population {
    wanted: usize,
    at_server: u64,
    rss_before_kb: u64,
    rss_open_kb: u64,
    rss_left_kb: u64,
    /// After the server handed its free heap pages back (`malloc_trim`).
    rss_trimmed_kb: u64,
    /// The same after each further cycle of the streams coming and leaving.
    rss_cycles_kb: Vec<u64>,
    idle_cpu_percent: f64,
    /// Write system calls per second while idle: keep-alives, and how many share a write.
    idle_writes_per_second: f64,
    streams_left: u64,
    publishes: Vec<(u64, u64, u64, u64)>,
    /// The server's write calls during each publish's delivery.
    writes_per_publish: Vec<u64>,
    /// The server's CPU time (ms) during each publish's delivery.
    cpu_per_publish: Vec<u64>,
}

impl Population {
    /// The row of the main table.
    fn row(&self, scenario: &str, protocol: Protocol, kind: &str) -> String {
        let per_stream = (self.rss_open_kb as f64 - self.rss_before_kb as f64)
            / (self.at_server as f64 - WARM_UP as f64).max(1.0);
        let change = |after: u64| {
            100.0 * (after as f64 - self.rss_before_kb as f64) / self.rss_before_kb as f64
        };
        let mb = |kb: u64| kb as f64 / 1024.0;
        format!(
            "| {scenario} | {} | {kind} | {} | {}{} | {:.1} MB | {:.1} MB | {per_stream:.2} KB | \
             {:.3} % | {:.0} | {:.1} MB ({:+.1} %){} | {:.1} MB ({:+.1} %){} |",
            protocol.name(),
            self.wanted,
            self.at_server,
            if self.at_server as usize == self.wanted {
                " ✓"
            } else {
                ""
            },
            mb(self.rss_before_kb),
            mb(self.rss_open_kb),
            self.idle_cpu_percent,
            self.idle_writes_per_second,
            mb(self.rss_left_kb),
            change(self.rss_left_kb),
            if self.streams_left == 0 {
                ""
            } else {
                " streams left!"
            },
            mb(self.rss_trimmed_kb),
            change(self.rss_trimmed_kb),
            self.rss_cycles_kb
                .iter()
                .map(|&kb| format!(", then {:.1} MB", mb(kb)))
                .collect::<String>(),
        )
    }

    /// The row of the publish table, if events were published.
    fn publish_row(&self, protocol: Protocol, kind: &str) -> Option<String> {
        if self.publishes.is_empty() {
            return None;
        }
        let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
        let each = |f: fn(&(u64, u64, u64, u64)) -> u64| {
            self.publishes
                .iter()
                .map(|p| ms(f(p)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let received: Vec<String> = self.publishes.iter().map(|p| p.0.to_string()).collect();
        let joined = |values: &[u64]| {
            values
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        };
        Some(format!(
            "| {} | {kind} | {} | {} | {} ms | {} ms | {} ms | {} | {} |",
            protocol.name(),
            self.at_server,
            received.join(" / "),
            each(|p| p.1),
            each(|p| p.2),
            each(|p| p.3),
            joined(&self.writes_per_publish),
            joined(&self.cpu_per_publish),
        ))
    }
}

/// Opens `streams` streams to a new `kind` server, measures them idle, publishes `publishes`
/// single events, then lets them all leave.
fn population(
    settings: &Settings,
    protocol: Protocol,
    kind: &str,
    streams: usize,
    publishes: usize,
) -> Population {
    let mut server = Server::start(kind, false);
    let warm = Clients::open(settings, protocol, server.addr, WARM_UP.min(streams), 1);
    server.wait_for_streams(warm.streams() as u64, Duration::from_secs(10));
    settle();
    let pid = server.process.pid();
    let rss_before_kb = rss_kb(pid);
    let clients = Clients::open(
        settings,
        protocol,
        server.addr,
        streams.saturating_sub(warm.streams()),
        settings.clients,
    );
    let expected = (warm.streams() + clients.streams()) as u64;
    let at_server = server.wait_for_streams(expected, Duration::from_secs(30));
    settle();
    let rss_open_kb = rss_kb(pid);
    let ticks = clock_ticks_per_second();
    let cpu_before = cpu_ticks(pid);
    let writes_before = write_calls(pid);
    let started = Instant::now();
    std::thread::sleep(settings.idle);
    let idle_writes_per_second =
        write_calls(pid).saturating_sub(writes_before) as f64 / started.elapsed().as_secs_f64();
    let idle_cpu_percent = 100.0 * cpu_ticks(pid).saturating_sub(cpu_before) as f64
        / ticks as f64
        / started.elapsed().as_secs_f64();

    let mut results = Vec::new();
    let (mut writes_per_publish, mut cpu_per_publish) = (Vec::new(), Vec::new());
    let mut all = [warm, clients];
    for _ in 0..publishes {
        all.iter_mut().for_each(Clients::reset);
        let (writes_before, cpu_before) = (write_calls(pid), cpu_ticks(pid));
        let published = server.publish(1);
        let (mut received, mut last) = (0, 0);
        let mut latencies = Vec::new();
        for clients in &mut all {
            let (got, at) = clients.wait_for(1);
            received += got;
            last = last.max(at);
            latencies.extend(clients.take_latencies());
        }
        latencies.sort_unstable();
        writes_per_publish.push(write_calls(pid).saturating_sub(writes_before));
        cpu_per_publish.push(cpu_ticks(pid).saturating_sub(cpu_before) * 1000 / ticks);
        results.push((
            received,
            percentile(&latencies, 50),
            percentile(&latencies, 99),
            last.saturating_sub(published) / 1000,
        ));
        std::thread::sleep(Duration::from_millis(500));
    }

    let [warm, clients] = all;
    drop(clients);
    let streams_left = server
        .wait_for_streams(warm.streams() as u64, Duration::from_secs(30))
        .saturating_sub(warm.streams() as u64);
    server.process.send("prune");
    server.process.expect("pruned");
    settle();
    let rss_left_kb = rss_kb(pid);
    server.process.send("trim");
    server.process.expect("trimmed");
    let rss_trimmed_kb = rss_kb(pid);
    // Further cycles: the same streams come and go again; a leak would grow with each.
    let mut rss_cycles_kb = Vec::new();
    for _ in 1..settings.cycles {
        let clients = Clients::open(
            settings,
            protocol,
            server.addr,
            streams.saturating_sub(warm.streams()),
            settings.clients,
        );
        server.wait_for_streams(expected, Duration::from_secs(30));
        drop(clients);
        server.wait_for_streams(warm.streams() as u64, Duration::from_secs(30));
        server.process.send("prune");
        server.process.expect("pruned");
        settle();
        server.process.send("trim");
        server.process.expect("trimmed");
        rss_cycles_kb.push(rss_kb(pid));
    }
    drop(warm);
    Population {
        rss_cycles_kb,
        wanted: streams,
        at_server,
        rss_before_kb,
        rss_open_kb,
        rss_left_kb,
        rss_trimmed_kb,
        idle_cpu_percent,
        idle_writes_per_second,
        streams_left,
        publishes: results,
        writes_per_publish,
        cpu_per_publish,
    }
}

/// `events` published back to back to `subscribers`: the deliveries counted at the clients
/// and the seconds from the first publish to the last byte.
fn sustained(
    settings: &Settings,
    protocol: Protocol,
    kind: &str,
    subscribers: usize,
) -> (u64, f64) {
    let mut server = Server::start(kind, false);
    let mut clients = Clients::open(
        settings,
        protocol,
        server.addr,
        subscribers,
        settings.clients,
    );
    server.wait_for_streams(clients.streams() as u64, Duration::from_secs(30));
    settle();
    clients.reset();
    let published = server.publish(settings.sustained_events);
    let (received, last) = clients.wait_for(settings.sustained_events as u64);
    clients.reset();
    let expected = (clients.streams() * settings.sustained_events) as u64;
    if received < expected {
        eprintln!("{kind}: {received} of {expected} deliveries arrived");
    }
    (received, last.saturating_sub(published) as f64 / 1e9)
}

/// The hub and axum over broadcast, both up, one event every 100 ms to each, interleaved.
fn latency(settings: &Settings, protocol: Protocol, nodelay: bool) {
    let subscribers = settings.streams(protocol, settings.latency_subscribers);
    let mut contenders: Vec<(&str, Server, Clients)> = ["hub", "axum-broadcast"]
        .into_iter()
        .map(|kind| {
            let mut server = Server::start(kind, nodelay);
            let clients = Clients::open(
                settings,
                protocol,
                server.addr,
                subscribers,
                settings.clients,
            );
            server.wait_for_streams(clients.streams() as u64, Duration::from_secs(30));
            (kind, server, clients)
        })
        .collect();
    settle();
    for (_, _, clients) in &mut contenders {
        clients.take_latencies();
    }
    let period = Duration::from_millis(100);
    let start = Instant::now();
    for n in 0..settings.latency_events as u32 {
        for (i, (_, server, _)) in contenders.iter_mut().enumerate() {
            let due = start + period * n + period / 2 * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            server.publish(1);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for (kind, _, clients) in &mut contenders {
        let mut latencies = clients.take_latencies();
        latencies.sort_unstable();
        println!(
            "| {} | {} | {kind} | {} of {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            protocol.name(),
            if nodelay { "on" } else { "off" },
            latencies.len(),
            clients.streams() * settings.latency_events,
            percentile(&latencies, 50) as f64 / 1000.0,
            percentile(&latencies, 99) as f64 / 1000.0,
            latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }
}

/// Locks a mutex; a panic elsewhere cannot leave these lists inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) * p).div_ceil(100)]
}

/// Lets the server finish what the last requests started (`SCALE_SETTLE_SECONDS`, default 1).
fn settle() {
    std::thread::sleep(Duration::from_secs(
        env_number("SCALE_SETTLE_SECONDS", 1) as u64
    ));
}

/// The resident set of a process, in KB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// The user and system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ticks(11) + ticks(12)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// The write system calls a process made so far (`syscw` in `/proc/<pid>/io`).
fn write_calls(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("syscw:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process's soft limit on open files (benches/scale.sh raises it to the hard limit).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds of the system clock: the one clock every process on the machine shares.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

// ---------------------------------------------------------------------------------------------
// The server.

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

/// Server mode: serves `kind` on a loopback port and answers the parent's commands on stdin:
/// `count` (streams held), `publish N` (N events, each carrying its publish time).
fn serve(kind: &str) {
    let nodelay = env_number("SCALE_NODELAY", 0) == 1;
    let max_streams = env_number("SCALE_MAX_STREAMS", 1_000) as u32;
    runtime().block_on(async move {
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
                let service = TowerToHyperService::new(router.clone());
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    let _ = builder
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
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

/// Publishes `events` events, `PUBLISH_BATCH` between yields, each carrying its publish time
/// as data; returns the first one's.
async fn publish(control: &Control, events: usize) -> u64 {
    let first = now_ns();
    for n in 0..events {
        let now = if n == 0 { first } else { now_ns() };
        match control {
            Control::None | Control::Emitters(_) => {}
            Control::Hub(topic) => {
                topic.publish(Event::new().data(now.to_string()));
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

// ---------------------------------------------------------------------------------------------
// The clients.

/// What a client process received.
#[derive(Default)]
struct Received {
    events: AtomicU64,
    /// When the latest event arrived (ns).
    last: AtomicU64,
    /// Publish-to-receipt times (µs) since the last report.
    latencies: Mutex<Vec<u64>>,
}

impl Received {
    fn event(&self, published: u64) {
        let now = now_ns();
        self.events.fetch_add(1, Ordering::Relaxed);
        self.last.fetch_max(now, Ordering::Relaxed);
        lock(&self.latencies).push(now.saturating_sub(published) / 1000);
    }
}

/// Finds the `data: <publish time>` lines in a stream's bytes, across reads.
#[derive(Default)]
struct Scanner {
    pending: Vec<u8>,
}

impl Scanner {
    fn feed(&mut self, bytes: &[u8], received: &Received) {
        const FIELD: &[u8] = b"data: ";
        self.pending.extend_from_slice(bytes);
        let mut from = 0;
        loop {
            let Some(at) = memchr::memmem::find(&self.pending[from..], FIELD) else {
                // Keep what could be the start of a field cut by the read.
                from = self.pending.len().saturating_sub(FIELD.len() - 1).max(from);
                break;
            };
            let value = from + at + FIELD.len();
            let Some(end) = memchr::memchr(b'\n', &self.pending[value..]) else {
                from += at;
                break;
            };
            let published = std::str::from_utf8(&self.pending[value..value + end])
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            received.event(published);
            from = value + end + 1;
        }
        self.pending.drain(..from);
    }
}

/// Client mode: `--client h1|h2 ADDR STREAMS PER_CONNECTION`. Opens the streams, prints
/// `opened N`, then answers `wait TOTAL TIMEOUT_MS` (`reached EVENTS LAST_NS` once TOTAL events
/// arrived since the last report, or at the timeout) and `report` (the latencies in µs,
/// comma-separated; clears them and the count). Ends when its input closes.
fn client(args: &[String]) {
    let protocol = args
        .first()
        .and_then(|p| Protocol::parse(p))
        .expect("h1 or h2");
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let streams: usize = args
        .get(2)
        .and_then(|n| n.parse().ok())
        .expect("a stream count");
    let per_connection: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);
    runtime().block_on(async move {
        let received = Arc::new(Received::default());
        let opened = match protocol {
            Protocol::Http1 => open_h1(addr, streams, &received).await,
            Protocol::Http2 => open_h2(addr, streams, per_connection, &received).await,
        };
        println!("opened {opened}");
        let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(command)) = commands.next_line().await {
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["wait", total, timeout] => {
                    let total: u64 = total.parse().unwrap_or(0);
                    let deadline =
                        Instant::now() + Duration::from_millis(timeout.parse().unwrap_or(0));
                    while received.events.load(Ordering::Relaxed) < total
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    println!(
                        "reached {} {}",
                        received.events.load(Ordering::Relaxed),
                        received.last.load(Ordering::Relaxed)
                    );
                }
                ["reset"] => {
                    lock(&received.latencies).clear();
                    received.events.store(0, Ordering::Relaxed);
                    println!("reset");
                }
                ["report"] => {
                    let latencies = std::mem::take(&mut *lock(&received.latencies));
                    received.events.store(0, Ordering::Relaxed);
                    let list: Vec<String> = latencies.iter().map(u64::to_string).collect();
                    println!("report {}", list.join(","));
                }
                _ => eprintln!("unknown command {command:?}"),
            }
        }
        std::process::exit(0);
    });
}

/// Opens `streams` HTTP/1.1 connections, each one `GET /sse` read by its own task.
async fn open_h1(addr: SocketAddr, streams: usize, received: &Arc<Received>) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut opening = Vec::with_capacity(streams);
    for _ in 0..streams {
        let permits = Arc::clone(&permits);
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let mut socket = TcpStream::connect(addr).await.ok()?;
            socket.set_nodelay(true).ok()?;
            socket
                .write_all(
                    b"GET /sse HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n",
                )
                .await
                .ok()?;
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            let end = loop {
                let read = socket.read(&mut buf).await.ok()?;
                if read == 0 {
                    return None;
                }
                head.extend_from_slice(&buf[..read]);
                if let Some(at) = memchr::memmem::find(&head, b"\r\n\r\n") {
                    break at + 4;
                }
            };
            head.starts_with(b"HTTP/1.1 200")
                .then_some((socket, head.split_off(end)))
        }));
    }
    let mut opened = 0;
    for task in opening {
        if let Ok(Some((mut socket, rest))) = task.await {
            opened += 1;
            let received = Arc::clone(received);
            tokio::spawn(async move {
                let mut scanner = Scanner::default();
                scanner.feed(&rest, &received);
                let mut buf = vec![0u8; 2048];
                while let Ok(read) = socket.read(&mut buf).await {
                    if read == 0 {
                        break;
                    }
                    scanner.feed(&buf[..read], &received);
                }
            });
        }
    }
    opened
}

/// Opens `streams` HTTP/2 streams, `per_connection` on each connection.
async fn open_h2(
    addr: SocketAddr,
    streams: usize,
    per_connection: usize,
    received: &Arc<Received>,
) -> usize {
    let permits = Arc::new(Semaphore::new(CONCURRENT_OPENS));
    let mut opening = Vec::new();
    let mut left = streams;
    while left > 0 {
        let count = left.min(per_connection);
        left -= count;
        let permits = Arc::clone(&permits);
        let received = Arc::clone(received);
        opening.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            let socket = TcpStream::connect(addr).await.ok()?;
            socket.set_nodelay(true).ok()?;
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let requests = (0..count).map(|_| {
                let mut sender = sender.clone();
                let received = Arc::clone(&received);
                async move {
                    let request = Request::get(format!("http://{addr}/sse"))
                        .header("accept", "text/event-stream")
                        .body(Empty::<Bytes>::new())
                        .ok()?;
                    let response = sender.send_request(request).await.ok()?;
                    if !response.status().is_success() {
                        return None;
                    }
                    let mut body = response.into_body();
                    tokio::spawn(async move {
                        let mut scanner = Scanner::default();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                scanner.feed(&data, &received);
                            }
                        }
                    });
                    Some(())
                }
            });
            let opened = futures::future::join_all(requests)
                .await
                .into_iter()
                .flatten()
                .count();
            Some(opened)
        }));
    }
    let mut opened = 0;
    for task in opening {
        if let Ok(Some(count)) = task.await {
            opened += count;
        }
    }
    opened
}
