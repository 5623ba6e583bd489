//! A real `nats-server` with JetStream for tests: its own process on a free loopback port with
//! its own store directory, ready when [`NatsServer::start`] returns, killed and cleaned up on
//! drop.
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

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// Variable naming the `nats-server` program when it is not on `PATH`.
pub const NATS_SERVER_ENV: &str = "NATS_SERVER";

/// How long a server may take to accept connections with JetStream enabled.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a fresh port when the chosen one was taken before the server bound it.
const PORT_ATTEMPTS: u32 = 3;

/// Servers started by this process, to give each its own directory.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// A running `nats-server -js` owned by a test.
pub struct NatsServer {
    child: Child,
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
            let log = std::fs::File::create(dir.join("nats-server.log"))?;
            let child = Command::new(&program)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.join("store"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
            let mut server = NatsServer { child, port, dir };
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

    async fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
