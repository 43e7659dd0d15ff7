//! Handles on the child processes: servers and clients, driven by lines on their stdin.

use std::{
    io::{BufRead, BufReader, Lines, Write},
    net::SocketAddr,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Protocol, Settings, DELIVERY_TIMEOUT};

/// A child process driven by lines on its stdin, answering with lines on its stdout.
pub(crate) struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Process {
    pub(crate) fn start(args: &[String], envs: &[(&str, String)]) -> Self {
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's input is open");
        writeln!(stdin, "{line}").expect("the child reads its input");
        stdin.flush().expect("the child reads its input");
    }

    /// The next output line that starts with `word`, without it.
    pub(crate) fn expect(&mut self, word: &str) -> String {
        for line in self.stdout.by_ref() {
            let line = line.expect("the child's output");
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().to_owned();
            }
        }
        panic!("the child ended before answering {word:?}");
    }

    /// Asks and reads the answer's first field as a number.
    pub(crate) fn ask_number(&mut self, question: &str, word: &str) -> u64 {
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

pub(crate) struct Server {
    pub(crate) process: Process,
    pub(crate) addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(kind: &str, nodelay: bool) -> Self {
        let mut process = Process::start(
            &["--serve".to_owned(), kind.to_owned()],
            &[("SCALE_NODELAY", u8::from(nodelay).to_string())],
        );
        let addr = process.expect("listening").parse().expect("an address");
        Server { process, addr }
    }

    pub(crate) fn open_streams(&mut self) -> u64 {
        self.process.ask_number("count", "count")
    }

    /// Waits until the server holds exactly `count` streams; returns what it holds at the end.
    pub(crate) fn wait_for_streams(&mut self, count: u64, limit: Duration) -> u64 {
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
    pub(crate) fn publish(&mut self, events: usize) -> u64 {
        self.process
            .ask_number(&format!("publish {events}"), "published")
    }
}

/// Client processes holding `streams` streams to one server between them.
pub(crate) struct Clients {
    processes: Vec<(Process, usize)>,
}

impl Clients {
    pub(crate) fn open(
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

    pub(crate) fn streams(&self) -> usize {
        self.processes.iter().map(|(_, n)| n).sum()
    }

    /// Waits until every client received `per_stream` events on each of its streams since the
    /// last reset; returns the events received and the time of the last one (ns).
    pub(crate) fn wait_for(&mut self, per_stream: u64) -> (u64, u64) {
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
    pub(crate) fn reset(&mut self) {
        for (process, _) in &mut self.processes {
            process.send("reset");
            process.expect("reset");
        }
    }

    /// The latencies (µs) the clients recorded since the last call; clears them and the counts.
    pub(crate) fn take_latencies(&mut self) -> Vec<u64> {
        let mut all = Vec::new();
        for (process, _) in &mut self.processes {
            process.send("report");
            let answer = process.expect("report");
            all.extend(answer.split(',').filter_map(|n| n.parse::<u64>().ok()));
        }
        all
    }
}
