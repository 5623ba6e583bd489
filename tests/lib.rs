//! Harness for black-box tests: runs the real `turbo-coder` binary as a child process in a
//! scratch home, with only the environment a test gives it, against scripted model servers.
//!
//! # Layout
//! - this file: [`Sandbox`] (home, workdir, data dir, environment) and [`Output`] helpers.
//! - [`cluster`]: [`cluster::Cluster`], the services as processes against a real nats-server and
//!   a fresh Postgres database.
//! - [`otlp`]: [`otlp::Collector`], an OTLP trace receiver the services export their spans to.

pub mod cluster;
pub mod otlp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The `turbo-coder` binary of this build (target/<profile>/turbo-coder), found from this
/// executable: a test in target/<profile>/deps/ or a program (`turbo-bench`) beside it.
/// `make test` builds it first; `TURBO_CODER_BIN` overrides.
pub fn turbo_coder_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TURBO_CODER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.with_file_name("turbo-coder");
    if beside.is_file() {
        return beside;
    }
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("turbo-coder");
    assert!(bin.is_file(), "{} is missing: build it with `cargo build -p turbo-coder` (make test does)", bin.display());
    bin
}

/// all-MiniLM-L6-v2 where `deploy/scripts/setup.sh` puts it: `TURBO_MINILM_DIR`, else
/// `all-MiniLM-L6-v2` in `TURBO_MODELS_DIR` or `~/.cache/turbo-coder/models`. The tests' scratch
/// homes hide the user's cache, so a test that wants the knowledge base names it.
pub fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TURBO_MINILM_DIR") {
        return dir.into();
    }
    let models = std::env::var_os("TURBO_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/turbo-coder/models")
    });
    models.join("all-MiniLM-L6-v2")
}

/// A scratch home with a project directory and a data directory, and the environment the
/// binary sees (nothing is inherited but PATH).
pub struct Sandbox {
    _root: tempfile::TempDir,
    pub home: PathBuf,
    pub workdir: PathBuf,
    pub data_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let home = root.path().join("home");
        let workdir = root.path().join("project");
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(&workdir).expect("workdir");
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".into(), home.display().to_string());
        env.insert("XDG_CONFIG_HOME".into(), home.join(".config").display().to_string());
        env.insert("XDG_DATA_HOME".into(), home.join(".local/share").display().to_string());
        Self { _root: root, home, workdir, data_dir, env }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.workdir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.workdir.join(rel)).ok()
    }

    /// Runs `turbo-coder --data-dir <data> ARGS` in the workdir.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(turbo_coder_bin());
        cmd.arg("--data-dir").arg(&self.data_dir).args(args).current_dir(&self.workdir).env_clear().envs(&self.env);
        cmd.stdin(std::process::Stdio::null());
        let out = cmd.output().await.expect("run turbo-coder");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The store the binary wrote, opened read-write by the test.
    pub async fn store(&self) -> turbo_store::Store {
        turbo_store::Store::open_sqlite(&self.data_dir.join("turbo.db")).await.expect("open the run's database")
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The JSON lines of a `--json` run, events and the final result.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nstderr: {}", self.stderr))
            })
            .collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.json_lines().into_iter().filter(|v| v["type"] == kind).collect()
    }

    pub fn result(&self) -> Value {
        self.events_of("result")
            .pop()
            .unwrap_or_else(|| panic!("no result line\nstdout: {}\nstderr: {}", self.stdout, self.stderr))
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}
