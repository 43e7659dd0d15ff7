//! Event streams at scale over real loopback sockets: how many one server process holds, what
//! each costs, and how fast one publish reaches all of them; HTTP/1.1 and HTTP/2 side by side,
//! against axum's `Sse` in the same run.
//!
//! One program in three roles: the parent (this program run plainly) starts servers and
//! clients as child processes (this program again, with `--serve KIND` or `--client`), so that
//! each process stays under the open-files limit and the clients' work is not charged to the
//! server. Every socket is on 127.0.0.1; every child ends when the parent closes its stdin.
//!
//! Servers (hyper-util's auto connection builder, tokio with 2 workers, or one thread with
//! `SCALE_SERVER_RUNTIME=current_thread`, HTTP/2 by prior knowledge or HTTP/1.1, at most
//! `SCALE_MAX_STREAMS` streams per HTTP/2 connection):
//!
//! * `tower-sse`: `SseLayer` (keep-alive every 15 s) around a `tower_sse::channel` body whose
//!   `SseEmitter` the server keeps;
//! * `axum`: axum's `Sse` with `KeepAlive::default()` (15 s) over a stream that never yields;
//! * `hub`: `SseLayer` around an `SseBody` of a subscriber of one `Hub` topic;
//! * `axum-broadcast`: axum's `Sse` with its keep-alive over a `tokio::sync::broadcast`
//!   receiver, one per stream;
//! * `hyper-floor` (idle only, `SCALE_IDLE_SERVERS=hyper-floor,...`): hyper alone, no router,
//!   layer or channel, serving a body that only waits for its own 15 s tokio interval and hands
//!   over `:\n`: the least an idle stream with keep-alives can cost on hyper.
//!
//! Each response body is counted while it lives, so the parent can confirm that every stream
//! reached the server and that every stream was released. Scenarios (`SCALE_SCENARIOS`, a
//! comma-separated subset of `idle,broadcast,sustained,latency`):
//!
//! * `idle`: N idle streams per server: RSS per stream, idle CPU over `SCALE_IDLE_SECONDS`, and
//!   RSS after they all left, against the RSS before they came; also its anonymous part
//!   (`RssAnon`: without the code pages run in between) and the heap in use by glibc's own
//!   count (`mallinfo2`), which is what a leak grows whatever the allocator keeps;
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

mod client;
mod process;
mod procfs;
mod server;

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use client::client;
use process::{Clients, Server};
use procfs::{
    clock_ticks_per_second, cpu_ticks, open_files_limit, rss_anon_kb, rss_kb, write_calls,
};
use server::serve;

/// Streams each client process opens before the baseline reading, so that it includes the
/// runtime's and the allocator's warm-up.
const WARM_UP: usize = 200;
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
        "scale: open-files limit {}, {} client processes, {} streams per HTTP/2 connection, \
         servers on tokio's {} scheduler",
        settings.fd_limit,
        settings.clients,
        settings.per_connection,
        server::server_scheduler()
    );
    let mut publish_rows = Vec::new();
    if settings.runs("idle") || settings.runs("broadcast") {
        println!();
        println!(
            "| scenario | proto | server | streams | at server | RSS before | RSS open | \
             RSS/stream | idle CPU | idle writes/s | RSS after leaving | after malloc_trim | \
             anonymous RSS before | anonymous after malloc_trim | heap in use before | \
             heap in use after leaving |"
        );
        println!("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
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

/// Bytes in a MiB.
const MIB: f64 = 1024.0 * 1024.0;

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
    /// The anonymous part of the resident set (`RssAnon`) before the streams came, and after
    /// they left and the heap was trimmed: RSS without the code pages run in between.
    anon_before_kb: u64,
    anon_trimmed_kb: u64,
    /// Bytes allocated and not freed (glibc's `mallinfo2`) before the streams came, and after
    /// they left: what a leak grows, whatever the allocator keeps of freed memory.
    heap_before: u64,
    heap_left: u64,
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
             {:.3} % | {:.0} | {:.1} MB ({:+.1} %){} | {:.1} MB ({:+.1} %){} | {:.1} MB | \
             {:.1} MB ({:+.1} %) | {:.2} MB | {:.2} MB ({:+.1} %) |",
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
            mb(self.anon_before_kb),
            mb(self.anon_trimmed_kb),
            100.0 * (self.anon_trimmed_kb as f64 - self.anon_before_kb as f64)
                / self.anon_before_kb as f64,
            self.heap_before as f64 / MIB,
            self.heap_left as f64 / MIB,
            100.0 * (self.heap_left as f64 - self.heap_before as f64) / self.heap_before as f64,
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
    let anon_before_kb = rss_anon_kb(pid);
    let heap_before = server.process.ask_number("heap", "heap");
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
    let anon_trimmed_kb = rss_anon_kb(pid);
    let heap_left = server.process.ask_number("heap", "heap");
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
        anon_before_kb,
        anon_trimmed_kb,
        heap_before,
        heap_left,
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
