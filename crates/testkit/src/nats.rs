//! A real `nats-server` with JetStream for tests: its own process on a free loopback port with
//! its own store directory, ready when [`NatsServer::start`] returns, killed and cleaned up on
//! drop. [`NatsServer::stop`] and [`NatsServer::restart`] take it down and bring it back on the
//! same port with the same JetStream store, as an outage of the server would.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = turbo_testkit::NatsServer::start().await?;
//! // connect a client to server.url()
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// Variable naming the `nats-server` program when it is not on `PATH`.
pub const NATS_SERVER_ENV: &str = "NATS_SERVER";

/// How long a server may take to accept connections with JetStream enabled.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when the chosen one was taken before the server bound it.
const PORT_ATTEMPTS: u32 = 3;

/// Servers started by this process, to give each its own directory.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// A running `nats-server -js` owned by a test.
pub struct NatsServer {
    /// None while stopped.
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts a server on `127.0.0.1` and a free port, with JetStream storing under a fresh
    /// temporary directory, and waits until it accepts clients with JetStream enabled.
    pub async fn start() -> std::io::Result<NatsServer> {
        let program = program()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("turbo-nats-{}-{n}-{port}", std::process::id()));
            // A leftover of an earlier process with the same pid must not leak its streams in.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let child = spawn(&program, port, &dir)?;
            let mut server = NatsServer { child: Some(child), port, dir };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("nats-server did not start")))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's output so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats-server.log")).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM, so JetStream writes out what it stored) and waits
    /// until it is gone; its port and store directory are kept for [`NatsServer::restart`].
    /// Nothing happens when it is stopped already.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = Pid::from_raw(i32::try_from(child.id()).map_err(std::io::Error::other)?);
        if kill(pid, Signal::SIGTERM).is_err() {
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (when running) and starts it again on the same port with the same
    /// JetStream store directory, waiting until it accepts clients with JetStream enabled;
    /// clients reconnect to the same URL and find their streams and consumers again.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await?;
        let program = program()?;
        let mut last_error = None;
        // The port was just released; a retry covers a server that cannot bind it at once.
        for _ in 0..PORT_ATTEMPTS {
            self.child = Some(spawn(&program, self.port, &self.dir)?);
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("nats-server did not start again")))
    }

    async fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().ok_or_else(|| std::io::Error::other("nats-server is stopped"))?;
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "nats-server exited with {status} before accepting clients: {}",
                    self.log()
                )));
            }
            if jetstream_ready(self.port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nats-server did not accept clients within {READY_TIMEOUT:?}: {}", self.log()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True once the server greets a client with an INFO line that announces JetStream.
async fn jetstream_ready(port: u16) -> bool {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect((Ipv4Addr::LOCALHOST, port))).await
    else {
        return false;
    };
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(1), BufReader::new(stream).read_line(&mut line)).await;
    matches!(read, Ok(Ok(n)) if n > 0) && line.starts_with("INFO ") && line.contains("\"jetstream\":true")
}

/// Starts `nats-server -js` on `port`, storing under `<dir>/store` and appending its output to
/// `<dir>/nats-server.log` (a restart keeps the earlier output).
fn spawn(program: &Path, port: u16, dir: &Path) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats-server.log"))?;
    Command::new(program)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// `$NATS_SERVER`, else `nats-server` on `PATH`, else Debian's `/usr/sbin/nats-server`.
fn program() -> std::io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(Path::new("/usr/sbin/nats-server").to_path_buf()).filter(|p| p.is_file())).ok_or_else(
        || {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "nats-server not found: install it (Debian: apt-get install nats-server) or set {NATS_SERVER_ENV}"
                ),
            )
        },
    )
}
