//! The registry proxy: how the calls of some tools (package installs) reach the package
//! registries, and nothing else on the network.
//!
//! Such a call's sandbox has no network of its own either (a private loopback). The proxy runs
//! in the tool-runner on a Unix socket, bound into that call's sandbox alone at
//! [`PROXY_INSIDE`]; inside, [`TOOL_EXEC`](crate::sandbox::TOOL_EXEC) listens on
//! `127.0.0.1:`[`PROXY_PORT`], forwards each connection to the socket, and runs the call's
//! program with `HTTP_PROXY` and `HTTPS_PROXY` naming that address (pip, npm, cargo, go and curl
//! read them). The proxy takes `CONNECT host:port` (HTTPS, the tunnel is end to end) and
//! absolute-form `http://` requests, to the hosts of `[sandbox.proxy] allow` only (an entry is
//! a host, `*.suffix`, or `host:port`; without a port, 443 and 80), and answers anything else
//! 403 saying which setting to change. Every decision is logged with the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::error::{Error, Result};

/// The port the proxy has inside a sandbox (the sandbox's own loopback).
pub const PROXY_PORT: u16 = 3128;
/// Where the proxy's socket is inside the sandbox of a call that may use it.
pub(crate) const PROXY_INSIDE: &str = "/run/turbo-proxy.sock";
/// A request head longer than this is refused.
const HEAD_MAX: usize = 16 << 10;
/// Time a client has to send its request head, and the proxy to reach the host.
const PATIENCE: Duration = Duration::from_secs(30);

/// Which tools' calls get the proxy, and where it lets them go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// Hosts: `pypi.org`, `*.pythonhosted.org`, `127.0.0.1:8080`. Empty: no proxy at all.
    pub allow: Vec<String>,
    /// Tools whose calls get it (by default `package_manager`).
    pub tools: Vec<String>,
}

impl ProxyPolicy {
    /// Whether calls of `tool` go through the proxy.
    pub fn applies_to(&self, tool: &str) -> bool {
        !self.allow.is_empty() && self.tools.iter().any(|t| t == tool)
    }

    /// Whether a connection to `host:port` is allowed.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            let (pattern, ports) = match entry.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
                Some((h, p)) => (h.to_owned(), vec![p]),
                None => (entry.clone(), vec![443, 80]),
            };
            let host_matches = match pattern.strip_prefix("*.") {
                Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
                None => host == pattern,
            };
            host_matches && ports.contains(&port)
        })
    }
}

/// The running proxy: its socket in a private directory, served on a thread of its own (so it
/// outlives whichever runtime first needed it); stopped and removed when dropped.
pub(crate) struct RegistryProxy {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl RegistryProxy {
    pub(crate) fn start(policy: ProxyPolicy) -> Result<RegistryProxy> {
        let failed = |what: &str, e: std::io::Error| Error::Sandbox {
            reason: format!("cannot start the registry proxy ([sandbox.proxy]): {what}: {e}"),
        };
        let dir = tempfile::Builder::new().prefix("turbo-proxy-").tempdir().map_err(|e| failed("a directory", e))?;
        let socket = dir.path().join("proxy.sock");
        let std_listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| failed("its socket", e))?;
        std_listener.set_nonblocking(true).map_err(|e| failed("its socket", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed("its runtime", e))?;
        let policy = Arc::new(policy);
        std::thread::Builder::new()
            .name("turbo-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match UnixListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(error) => return tracing::error!(%error, "the registry proxy cannot listen"),
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept(listener, policy) => {}
                    }
                })
            })
            .map_err(|e| failed("its thread", e))?;
        Ok(RegistryProxy { socket, _dir: dir, stop: Some(stop) })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

async fn accept(listener: UnixListener, policy: Arc<ProxyPolicy>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, policy.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "the registry proxy cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// CONNECT (a tunnel) rather than a plain HTTP request to forward.
    tunnel: bool,
}

/// The host and port of a request's first line: `CONNECT host:port` or `GET http://host[:port]/..`.
fn target(head: &[u8]) -> std::result::Result<Target, String> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, uri) = match (words.next(), words.next()) {
        (Some(m), Some(u)) => (m, u),
        _ => return Err("the request has no method and target".into()),
    };
    let (authority, tunnel, default_port) = if method.eq_ignore_ascii_case("CONNECT") {
        (uri, true, None)
    } else if let Some(rest) = uri.strip_prefix("http://") {
        (rest.split(['/', '?', '#']).next().unwrap_or_default(), false, Some(80))
    } else {
        return Err(format!("only CONNECT and http:// requests go through this proxy, not '{method} {uri}'"));
    };
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:443.
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or("an unclosed [ in the host")?;
            (host.to_owned(), rest.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        },
    };
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().map_err(|_| format!("'{p}' is not a port"))?,
        (None, Some(p)) => p,
        (None, None) => return Err("CONNECT needs host:port".into()),
    };
    if host.is_empty() {
        return Err("the request names no host".into());
    }
    Ok(Target { host, port, tunnel })
}

async fn answer(stream: &mut UnixStream, status: &str, text: &str) {
    let body = format!("turbo-coder registry proxy: {text}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One connection: reads the request head, checks its host, and joins the two ends.
async fn serve(mut client: UnixStream, policy: Arc<ProxyPolicy>) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 2048];
        loop {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(end + 4);
            }
            if head.len() > HEAD_MAX {
                return Err("the request head is longer than 16 KiB");
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return Err("the connection ended before the request head"),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let end = match read {
        Ok(Ok(end)) => end,
        Ok(Err(why)) => return answer(&mut client, "400 Bad Request", why).await,
        Err(_) => return answer(&mut client, "408 Request Timeout", "no request head within 30 s").await,
    };
    let target = match target(&head[..end]) {
        Ok(t) => t,
        Err(why) => return answer(&mut client, "400 Bad Request", &why).await,
    };
    let Target { host, port, tunnel } = &target;
    if !policy.permits(host, *port) {
        tracing::warn!(host, port, "registry proxy: refused");
        let text = format!("{host}:{port} is not allowed; add it to [sandbox.proxy] allow to let tools reach it");
        return answer(&mut client, "403 Forbidden", &text).await;
    }
    let mut upstream = match tokio::time::timeout(PATIENCE, TcpStream::connect((host.as_str(), *port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return answer(&mut client, "502 Bad Gateway", &format!("cannot reach {host}:{port}: {e}")).await,
        Err(_) => return answer(&mut client, "504 Gateway Timeout", &format!("{host}:{port} did not answer")).await,
    };
    tracing::info!(host, port, tunnel, "registry proxy: allowed");
    let sent = if *tunnel {
        // What the client sent after the head is already the tunnel's.
        match client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await {
            Ok(()) => upstream.write_all(&head[end..]).await,
            Err(e) => Err(e),
        }
    } else {
        upstream.write_all(&head).await
    };
    if sent.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// Inside the sandbox ([`TOOL_EXEC`](crate::sandbox::TOOL_EXEC) `--proxy SOCKET -- PROGRAM
/// ARGS..`): listens on `127.0.0.1:`[`PROXY_PORT`], forwards each connection to `socket`,
/// runs the program, and exits as it did.
pub(crate) fn forward_main(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitCode;

    let usage = || {
        eprintln!("usage: turbo-tool-exec --proxy SOCKET -- PROGRAM [ARGS..] (started by the tool-runner)");
        ExitCode::from(2)
    };
    let (Some(socket), Some(dashes)) = (args.first(), args.get(1)) else { return usage() };
    if dashes != "--" || args.len() < 3 {
        return usage();
    }
    let listener = match std::net::TcpListener::bind(("127.0.0.1", PROXY_PORT)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("turbo-sandbox: cannot listen on 127.0.0.1:{PROXY_PORT} for the registry proxy: {e}");
            return ExitCode::from(125);
        }
    };
    let socket = PathBuf::from(socket);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || {
                if let Ok(proxy) = std::os::unix::net::UnixStream::connect(&socket) {
                    join(client, proxy);
                }
            });
        }
    });
    match std::process::Command::new(&args[2]).args(&args[3..]).status() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(255)),
            (None, None) => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("turbo-sandbox: cannot start {}: {e}", args[2].to_string_lossy());
            ExitCode::from(127)
        }
    }
}

/// Copies both ways between a TCP client and the proxy's socket until both ends are done.
fn join(client: std::net::TcpStream, proxy: std::os::unix::net::UnixStream) {
    let (Ok(mut client_r), Ok(mut proxy_r)) = (client.try_clone(), proxy.try_clone()) else { return };
    let (mut client_w, mut proxy_w) = (client, proxy);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut proxy_w);
        let _ = proxy_w.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut proxy_r, &mut client_w);
    let _ = client_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> ProxyPolicy {
        ProxyPolicy { allow: allow.iter().map(|s| s.to_string()).collect(), tools: vec!["package_manager".into()] }
    }

    #[test]
    fn hosts_are_allowed_by_name_suffix_and_port() {
        let p = policy(&["pypi.org", "*.pythonhosted.org", "127.0.0.1:8080"]);
        assert!(p.permits("pypi.org", 443) && p.permits("PyPI.org.", 80));
        assert!(!p.permits("pypi.org", 22), "other ports need naming");
        assert!(!p.permits("evilpypi.org", 443) && !p.permits("pypi.org.evil.com", 443));
        assert!(p.permits("files.pythonhosted.org", 443));
        assert!(!p.permits("pythonhosted.org", 443), "*.x is x's subdomains");
        assert!(p.permits("127.0.0.1", 8080) && !p.permits("127.0.0.1", 443));
        assert!(p.applies_to("package_manager") && !p.applies_to("shell_run"));
        assert!(!policy(&[]).applies_to("package_manager"), "no hosts: no proxy");
    }

    #[test]
    fn request_heads_name_their_target() {
        let t = |s: &str| target(s.as_bytes());
        assert_eq!(
            t("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n"),
            Ok(Target { host: "pypi.org".into(), port: 443, tunnel: true })
        );
        assert_eq!(
            t("GET http://deb.example/x?y HTTP/1.1\r\n\r\n"),
            Ok(Target { host: "deb.example".into(), port: 80, tunnel: false })
        );
        assert_eq!(
            t("GET http://u:p@[::1]:8080/ HTTP/1.1\r\n\r\n"),
            Ok(Target { host: "::1".into(), port: 8080, tunnel: false })
        );
        assert!(t("GET /local HTTP/1.1\r\n\r\n").unwrap_err().contains("only CONNECT"));
        assert!(t("CONNECT pypi.org HTTP/1.1\r\n\r\n").unwrap_err().contains("host:port"));
        assert!(t("CONNECT pypi.org:99999 HTTP/1.1\r\n\r\n").unwrap_err().contains("not a port"));
        assert!(t("\r\n\r\n").is_err());
    }
}
