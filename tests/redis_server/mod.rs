//! A real `redis-server` for the tests: started on a free loopback port with a temp dir of its
//! own (append-only file, `appendfsync always`, so what it acknowledged survives a kill), and
//! stopped (by its own PID) when dropped. Nothing global is touched.
//!
//! Without `redis-server` installed the tests that need one are skipped with a loud message,
//! except in CI (`CI` set), where that is a failure.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Where Debian installs it, unless `REDIS_SERVER` names another binary.
fn binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| "/usr/bin/redis-server".into(), PathBuf::from)
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one, or `None` (after saying so loudly) when `redis-server` is not installed and
    /// this is not CI.
    pub fn start() -> Option<RedisServer> {
        let binary = binary();
        if !binary.exists() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{} is missing: CI must install redis-server",
                    binary.display()
                );
            }
            eprintln!(
                "\n!!! SKIPPED: {} is not installed (apt-get install redis-server); \
                 the Redis tests did not run !!!\n",
                binary.display()
            );
            return None;
        }
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-redis-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir for redis-server");
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
            };
            if server.spawn() {
                return Some(server);
            }
        }
        panic!(
            "redis-server did not start on a free port (see {})",
            dir.display()
        );
    }

    /// Starts the process on this server's port and dir; whether it answers in time.
    fn spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .args(["--logfile", &self.dir.join("redis.log").to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(child) = &mut self.child else {
                return false;
            };
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return false;
            }
            if answers(self.port, child.id()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client of this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it at once (SIGKILL): only what it wrote to its append-only file survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and with the same data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one command on a connection of its own (not one the code under test uses).
    pub async fn command<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> T {
        let mut connection = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        command.query_async(&mut connection).await.unwrap()
    }

    /// How many times Redis ran `name` (from `INFO commandstats`), 0 if never; `*` counts
    /// every command but `INFO` and `CLIENT` (this harness's own).
    pub async fn calls(&self, name: &str) -> u64 {
        let info: String = self.command(redis::cmd("INFO").arg("commandstats")).await;
        let prefix = if name == "*" {
            "cmdstat_".to_owned()
        } else {
            format!("cmdstat_{name}:")
        };
        info.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter(|rest| name != "*" || !(rest.starts_with("info") || rest.starts_with("client")))
            .filter_map(|rest| rest.split_once("calls=")?.1.split(',').next())
            .map(|calls| calls.parse::<u64>().unwrap())
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the Redis answering on the port is the process `pid` (from `INFO server`), so that
/// one another test started on the same port is never taken for it.
fn answers(port: u16, pid: u32) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    // The section's lines up to `tcp_port`, which comes after `process_id`.
    let mut reply = Vec::new();
    let mut chunk = [0; 4096];
    while !reply.windows(9).any(|window| window == b"tcp_port:") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(read) => reply.extend_from_slice(&chunk[..read]),
        }
    }
    let line = format!("process_id:{pid}\r\n");
    reply
        .windows(line.len())
        .any(|window| window == line.as_bytes())
}
