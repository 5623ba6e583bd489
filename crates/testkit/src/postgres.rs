//! A real Postgres server of a test's own: `initdb` into a fresh directory, `postgres` on a free
//! loopback port, trust authentication for the `postgres` user. [`PostgresServer::stop`] and
//! [`PostgresServer::restart`] take it down and bring it back on the same port with the same
//! data, as an outage of the database would; it is stopped and removed on drop.
//!
//! The shared server of the machine (127.0.0.1:5432) is for everything else: stopping it would
//! break the other tests running at the same time.
//!
//! The programs are found in `$PG_BIN` or else in the newest `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package). Postgres refuses to run as root: as root, the server runs
//! as the `postgres` user through `runuser`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mut server = turbo_testkit::PostgresServer::start().await?;
//! // connect to server.url("postgres") ...
//! server.stop().await?;
//! server.restart().await?;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::process::Command;

/// Variable naming the directory of `initdb`, `pg_ctl` and `postgres`.
pub const PG_BIN_ENV: &str = "PG_BIN";

/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_S: &str = "60";
/// Attempts with a fresh port when the chosen one was taken before the server bound it.
const PORT_ATTEMPTS: u32 = 3;

static STARTED: AtomicU64 = AtomicU64::new(0);

/// A running (or stopped) Postgres server owned by a test.
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl PostgresServer {
    /// Creates a database cluster in a fresh temporary directory and starts it on a free
    /// loopback port; returns once it accepts connections.
    pub async fn start() -> std::io::Result<PostgresServer> {
        let bin = bin_dir()?;
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("turbo-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if as_root() {
            run(Command::new("chown").arg("postgres:").arg(&dir), "chown the data directory to postgres").await?;
        }
        let mut initdb = Command::from(command(&bin, "initdb"));
        initdb.arg("-D").arg(dir.join("data")).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
        run(&mut initdb, "initdb").await?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match pg_start(&bin, &dir, port).await {
                Ok(()) => return Ok(PostgresServer { bin, dir, port, running: true }),
                Err(e) => last_error = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| std::io::Error::other("postgres did not start")))
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: open sessions are ended) and waits until it is down;
    /// its port and data are kept for [`PostgresServer::restart`].
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if !self.running {
            return Ok(());
        }
        pg_ctl(&self.bin, &self.dir, &["stop", "-m", "fast"]).await?;
        self.running = false;
        Ok(())
    }

    /// Starts the server (again) on its port with its data and waits until it accepts
    /// connections.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await?;
        pg_start(&self.bin, &self.dir, self.port).await?;
        self.running = true;
        Ok(())
    }
}

/// Starts the server of `dir` on `port`, returning once it accepts connections.
async fn pg_start(bin: &Path, dir: &Path, port: u16) -> std::io::Result<()> {
    let options =
        format!("-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200", dir.display());
    let log = dir.join("postgres.log");
    pg_ctl(bin, dir, &["start", "-l", &log.display().to_string(), "-o", &options]).await.map_err(|e| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        std::io::Error::new(e.kind(), format!("{e}; the server's log: {log}"))
    })
}

async fn pg_ctl(bin: &Path, dir: &Path, args: &[&str]) -> std::io::Result<()> {
    let mut pg_ctl = Command::from(command(bin, "pg_ctl"));
    pg_ctl.arg("-D").arg(dir.join("data")).args(["-w", "-t", PG_CTL_WAIT_S]).args(args);
    run(&mut pg_ctl, &format!("pg_ctl {}", args[0])).await
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let _ = command(&self.bin, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-w", "stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program` from `bin`, run as the `postgres` user when this process is root.
fn command(bin: &Path, program: &str) -> std::process::Command {
    let path = bin.join(program);
    if as_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        std::process::Command::new(path)
    }
}

async fn run(command: &mut Command, what: &str) -> std::io::Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// `$PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn bin_dir() -> std::io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("initdb not found: install Postgres (Debian: apt-get install postgresql) or set {PG_BIN_ENV}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_accepts_connections_stops_and_comes_back_with_its_data() {
        let mut server = PostgresServer::start().await.expect("postgres starts");
        let reachable = |port: u16| std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok();
        assert!(reachable(server.port()));
        server.stop().await.unwrap();
        assert!(!reachable(server.port()), "stopped, the port is closed");
        server.restart().await.unwrap();
        assert!(reachable(server.port()));
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "removed on drop");
    }
}
