//! The gateway (figure 9): the release `turbo-orchestrator` and `turbo-gateway` binaries (built
//! beside this one) as processes, the orchestrator embedded (its agents in-process, the
//! scripted model server planning and coding at once), both on one SQLite store, the rate
//! limit raised so that it counts every request but refuses none.
//!
//! - Authenticated `GET /v1/tasks/{id}` under load from wrk (Debian package `wrk`): requests/s
//!   and latency p50/p99. Each request checks the token, reads the user in the store, counts
//!   the rate limit (one upsert), asks the orchestrator for the task and for its project (to
//!   check visibility). Beside it, the same wrk against `GET /v1/openapi.json` on the same
//!   gateway: no token, no store, no orchestrator: the floor of the HTTP stack.
//! - `sessions` WebSocket sessions following one task: the resident memory of the gateway and
//!   the orchestrator before and after they are connected (per session), and the latency of
//!   the task's events while it runs, from the time the recorder stamped each event (`at`) to
//!   each client reading it, over every (session, event).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use turbo_testkit::{ModelDef, Reply, Script, ScriptedModelServer};

use crate::stats::Stats;

/// The token key of the benchmark's gateway.
const SECRET: &str = "bench-secret-bench-secret-bench-secret-0";
/// wrk's connections and duration per measurement.
pub const WRK_CONNECTIONS: usize = 32;
pub const WRK_SECONDS: u64 = 10;
/// Longest any one step may take before the bench fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(120);

/// One wrk measurement.
pub struct Load {
    pub requests_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Responses that were not 2xx (wrk's "Non-2xx or 3xx responses").
    pub errors: u64,
}

pub struct GatewayFigures {
    pub get_task: Load,
    pub floor: Load,
    pub sessions: usize,
    pub gateway_rss_before_kib: u64,
    pub gateway_rss_after_kib: u64,
    pub orchestrator_rss_before_kib: u64,
    pub orchestrator_rss_after_kib: u64,
    /// Time to open every session and connect its WebSocket.
    pub connect_wall: Duration,
    pub events_per_session: usize,
    pub event_latency: Stats,
}

/// A service process that printed `<name> listening on <addr>`, killed on drop.
struct Proc {
    child: Child,
    addr: String,
}

impl Proc {
    async fn start(program: &Path, name: &str, env: &[(&str, String)], dir: &Path) -> anyhow::Result<Proc> {
        let mut command = Command::new(program);
        command
            .args(["--listen", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("TURBO_CODER__STORE__DATA_DIR", dir.join("data"))
            .env("TURBO_CODER__TELEMETRY__LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().with_context(|| format!("start {}", program.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .map_err(|_| anyhow!("{name} printed no address"))??
            .ok_or_else(|| anyhow!("{name} exited before printing its address"))?;
        let addr = line.strip_prefix(&format!("{name} listening on ")).ok_or_else(|| anyhow!("unexpected: {line}"))?;
        // Kept reading so the service never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc { addr: addr.to_string(), child })
    }

    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    ensure!(
        path.exists(),
        "{} is not built: run `make bench-gateway` (it builds it beside turbo-bench)",
        path.display()
    );
    Ok(path)
}

/// Runs wrk against `url` with `token`; its summary read back.
async fn wrk(url: &str, token: Option<&str>) -> anyhow::Result<Load> {
    let mut command = Command::new("wrk");
    command.args(["-t2", &format!("-c{WRK_CONNECTIONS}"), &format!("-d{WRK_SECONDS}s"), "--latency"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.arg(url).output().await.context("run wrk (apt-get install wrk; `make setup` installs it)")?;
    ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    }))
}

fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let field = |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(str::to_string);
    let percentile = |p: &str| {
        field(p)
            .and_then(|l| l.split_whitespace().nth(1).and_then(wrk_duration))
            .ok_or_else(|| anyhow!("no {p} in wrk's output:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output:\n{text}"))?;
    let errors =
        field("Non-2xx or 3xx responses:").and_then(|l| l.split_whitespace().last()?.parse().ok()).unwrap_or(0);
    Ok(Load { requests_per_s: rps, p50: percentile("50%")?, p99: percentile("99%")?, errors })
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> anyhow::Result<Value> {
    let response = http.post(url.clone()).bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "POST {url}: {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, path: &str, token: &str) -> anyhow::Result<Ws> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

pub async fn measure(sessions: usize) -> anyhow::Result<GatewayFigures> {
    let dir = tempfile::tempdir()?;
    let plan = json!({
        "phases": [{"name": "implement", "description": "write greet() and its test", "agent": "coder", "depends_on": [],
                    "estimated_minutes": 5, "files_to_create": ["greet.py"]}],
        "confidence_score": 0.9,
        "risk_factors": []
    });
    let models = ScriptedModelServer::start(
        Script::new()
            .repeat(true)
            .model(ModelDef::new("planner:bench", 131072))
            .model(ModelDef::new("coder:bench", 32768))
            .replies("planner:bench", vec![Reply::Json(plan)])
            .replies("coder:bench", vec![Reply::text("done")]),
    )
    .await?;
    let orchestrator = Proc::start(
        &sibling("turbo-orchestrator")?,
        "turbo-orchestrator",
        &[
            ("TURBO_CODER__MODELS__PLANNER__BASE_URL", models.url()),
            ("TURBO_CODER__MODELS__PLANNER__MODEL", "planner:bench".into()),
            ("TURBO_CODER__MODELS__CODER__BASE_URL", models.url()),
            ("TURBO_CODER__MODELS__CODER__MODEL", "coder:bench".into()),
        ],
        dir.path(),
    )
    .await?;
    let gateway = Proc::start(
        &sibling("turbo-gateway")?,
        "turbo-gateway",
        &[
            ("TURBO_CODER__GATEWAY__ORCHESTRATOR_URL", format!("http://{}", orchestrator.addr)),
            ("TURBO_CODER__GATEWAY__JWT_SECRET", SECRET.into()),
            ("TURBO_CODER__GATEWAY__RATE_LIMIT_PER_HOUR", "1000000000000".into()),
        ],
        dir.path(),
    )
    .await?;
    let token = turbo_gateway::auth::Tokens::new(SECRET.as_bytes(), "turbo-coder", "turbo-coder")
        .issue("bench", &[turbo_gateway::auth::Role::Developer], Duration::from_secs(3600))
        .map_err(|e| anyhow!("{e}"))?;
    let base = format!("http://{}", gateway.addr);
    let http = reqwest::Client::new();
    let project = post(
        &http,
        format!("{base}/v1/projects"),
        &token,
        json!({"name": "bench", "project_type": "api_service", "technologies": ["python"]}),
    )
    .await?;
    let project_id = project["project_id"].as_str().context("project_id")?.to_string();
    let task = post(
        &http,
        format!("{base}/v1/projects/{project_id}/tasks"),
        &token,
        json!({"description": "add a greet(name) function in greet.py"}),
    )
    .await?;
    let task_id = task["task_id"].as_str().context("task_id")?.to_string();

    let get_task = wrk(&format!("{base}/v1/tasks/{task_id}"), Some(&token)).await?;
    let floor = wrk(&format!("{base}/v1/openapi.json"), None).await?;

    // Sessions: opened one by one, connected in batches; each reader records its events' latency.
    let gateway_rss_before_kib = gateway.rss_kib();
    let orchestrator_rss_before_kib = orchestrator.rss_kib();
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let session =
            post(&http, format!("{base}/v1/projects/{project_id}/sessions"), &token, json!({"task_id": task_id}))
                .await?;
        let path = session["websocket_url"].as_str().context("websocket_url")?.to_string();
        sockets.push(connect(&gateway.addr, &path, &token).await?);
    }
    let connect_wall = started.elapsed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration)>();
    for ws in sockets {
        tokio::spawn(read_events(ws, tx.clone()));
    }
    drop(tx);
    // Let every session take the task's planning events, then measure memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gateway_rss_after_kib = gateway.rss_kib();
    let orchestrator_rss_after_kib = orchestrator.rss_kib();
    while rx.try_recv().is_ok() {}

    let run = post(&http, format!("{base}/v1/tasks/{task_id}/execute"), &token, json!({})).await?;
    let last_seq = run["last_seq"].as_u64().context("last_seq")?;
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((seq, latency))) if seq > last_seq => latencies.push(latency),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => bail!("the task's events did not reach every session within {PATIENCE:?}"),
        }
    }
    ensure!(!latencies.is_empty(), "no event of the run reached a session");
    ensure!(
        latencies.len() % sessions == 0,
        "{} latencies is not a multiple of {sessions} sessions: some missed events",
        latencies.len()
    );
    let events_per_session = latencies.len() / sessions;
    drop(gateway);
    drop(orchestrator);
    Ok(GatewayFigures {
        get_task,
        floor,
        sessions,
        gateway_rss_before_kib,
        gateway_rss_after_kib,
        orchestrator_rss_before_kib,
        orchestrator_rss_after_kib,
        connect_wall,
        events_per_session,
        event_latency: Stats::of(latencies),
    })
}

/// Reads a session's messages until its task ends, sending (seq, latency) of each task event.
async fn read_events(mut ws: Ws, tx: tokio::sync::mpsc::UnboundedSender<(u64, Duration)>) {
    use tokio_tungstenite::tungstenite::Message;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else { continue };
        let received = chrono::Utc::now();
        let Ok(m) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if m["message_type"] != "task_event" {
            continue;
        }
        let at = m["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let (Some(seq), Some(at)) = (m["seq"].as_u64(), at) {
            let latency = (received - at.with_timezone(&chrono::Utc)).to_std().unwrap_or_default();
            let _ = tx.send((seq, latency));
        }
        let to = m["event"]["to"].as_str().unwrap_or_default();
        if m["event"]["type"] == "status_changed" && ["completed", "failed", "cancelled"].contains(&to) {
            break;
        }
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 10s test @ http://127.0.0.1:1/v1/tasks/x\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     3.10ms    1.20ms  30.00ms   80.00%\n  Latency Distribution\n     50%    2.90ms\n     75%    3.50ms\n     90%    4.20ms\n     99%   12.34ms\n  51234 requests in 10.00s, 9.9MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:   5123.40\nTransfer/sec:      1.00MB\n";
        let load = parse_wrk(out).unwrap();
        assert_eq!((load.requests_per_s, load.errors), (5123.40, 3));
        assert_eq!((load.p50, load.p99), (Duration::from_micros(2900), Duration::from_micros(12340)));
        assert_eq!(wrk_duration("850.00us"), Some(Duration::from_micros(850)));
        assert!(parse_wrk("nothing").is_err());
    }
}
