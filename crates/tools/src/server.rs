//! The real `webex-push` binary as a child process: found next to the tool, started
//! with a given environment, its address read from its JSON `listening` log line,
//! stopped with SIGTERM, and measured through `/proc`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The variable that names the server binary when no `--server-bin` is given.
pub const SERVER_BIN_ENV: &str = "WEBEX_PUSH_BIN";

/// Log lines kept for a failure report; the oldest are dropped past this.
const KEPT_LINES: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no webex-push binary at {0}: build it (cargo build --release -p webex-push) or name it with --server-bin / WEBEX_PUSH_BIN"
    )]
    BinaryMissing(PathBuf),
    #[error("cannot find this tool's own executable")]
    CurrentExe(#[source] std::io::Error),
    #[error("cannot start {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server exited before it was ready ({status}); its log:\n{log}")]
    ExitedEarly { status: String, log: String },
    #[error("the server did not {what} within {timeout:?}; its log:\n{log}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
        log: String,
    },
    #[error("cannot signal the server")]
    Signal(#[source] std::io::Error),
    #[error("waiting for the server failed")]
    Wait(#[source] std::io::Error),
}

/// Where the server binary is: `explicit` (a flag), else `WEBEX_PUSH_BIN`, else
/// `webex-push` next to this executable (both land in `target/<profile>/`).
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf, ServerError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os(SERVER_BIN_ENV).filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()
                .map_err(ServerError::CurrentExe)?
                .with_file_name("webex-push"),
        },
    };
    if path.is_file() {
        // Absolute, since the server runs in another working directory.
        Ok(std::fs::canonicalize(&path).unwrap_or(path))
    } else {
        Err(ServerError::BinaryMissing(path))
    }
}

/// Log lines as they come, and a signal when a new one arrives.
#[derive(Default)]
struct LogBook {
    lines: Mutex<VecDeque<String>>,
}

impl LogBook {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A running `webex-push`. Dropping it kills the process (the error path); [`Self::stop`]
/// is the clean way.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    address: String,
    log: Arc<LogBook>,
}

impl ServerProcess {
    /// Starts `binary` with `envs` added to an environment cleared of everything but
    /// `PATH` and `HOME` (so that a developer's own `DATABASE_URL` or `APNS_*` cannot
    /// leak in), in `dir`, with JSON logs, and waits for its `listening` line.
    ///
    /// `echo` receives every log line too (the demo shows them on request).
    pub async fn start(
        binary: &Path,
        dir: &Path,
        envs: &[(&str, String)],
        echo: Option<tokio::sync::mpsc::UnboundedSender<String>>,
        timeout: Duration,
    ) -> Result<Self, ServerError> {
        let mut command = Command::new(binary);
        command.env_clear();
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .envs(
                envs.iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            )
            .env("LOG_FORMAT", "json")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ServerError::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let log = Arc::new(LogBook::default());
        let (address_tx, mut address_rx) = watch::channel(None::<String>);
        if let Some(stdout) = child.stdout.take() {
            let log = Arc::clone(&log);
            let echo = echo.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        if value["message"] == "listening" {
                            if let Some(address) = value["address"].as_str() {
                                let _ = address_tx.send(Some(address.to_owned()));
                            }
                        }
                    }
                    if let Some(echo) = &echo {
                        let _ = echo.send(line.clone());
                    }
                    log.push(line);
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(echo) = &echo {
                        let _ = echo.send(line.clone());
                    }
                    log.push(line);
                }
            });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let address = loop {
            if let Some(address) = address_rx.borrow_and_update().clone() {
                break address;
            }
            tokio::select! {
                changed = address_rx.changed() => {
                    if changed.is_err() {
                        // stdout closed without a `listening` line: the process is ending.
                        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                        return Err(ServerError::ExitedEarly {
                            status: match status {
                                Ok(Ok(status)) => status.to_string(),
                                _ => "still running, stdout closed".to_owned(),
                            },
                            log: log.text(),
                        });
                    }
                }
                status = child.wait() => {
                    return Err(ServerError::ExitedEarly {
                        status: status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                        log: log.text(),
                    });
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ServerError::Timeout { what: "log its `listening` line", timeout, log: log.text() });
                }
            }
        };
        Ok(Self {
            child,
            pid,
            address,
            log,
        })
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `host:port` as logged.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the server logged so far (the last lines).
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// Polls `GET /readyz` until it answers 200 (the database answers and the key is
    /// loaded), or `timeout`.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<(), ServerError> {
        let url = format!("{}/readyz", self.base_url());
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Ok(response) = http.get(&url).send().await {
                if response.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::ExitedEarly {
                    status: status.to_string(),
                    log: self.log.text(),
                });
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(ServerError::Timeout {
                    what: "answer 200 on /readyz",
                    timeout,
                    log: self.log.text(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the exit (the server drains its push queue first).
    /// Past `timeout` the process is killed and this is an error.
    pub async fn stop(mut self, timeout: Duration) -> Result<ExitStatus, ServerError> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .map_err(|e| ServerError::Signal(e.into()))?;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.map_err(ServerError::Wait),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(ServerError::Timeout {
                    what: "exit after SIGTERM",
                    timeout,
                    log: self.log.text(),
                })
            }
        }
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        proc_cpu_time(self.pid)
    }

    /// `(VmRSS, VmHWM)` in bytes: resident memory now and its peak since start.
    pub fn memory(&self) -> Option<(u64, u64)> {
        proc_memory(self.pid)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times: 100 on every Linux this runs
/// on (`getconf CLK_TCK`), asked once in case it is not.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of `pid` from `/proc/<pid>/stat`.
pub fn proc_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its `)` are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `)`: field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// utime + stime of every process whose command name is `name` (e.g. all of Postgres'
/// backends and workers), from `/proc/*/stat`. Processes that exit between two readings
/// take their time with them, so compare readings of long-lived processes.
pub fn processes_cpu_time(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(proc_cpu_time)
        .sum()
}

/// CPU time the whole machine spent busy (all states but idle and iowait) and in all,
/// summed over its CPUs, from the first line of `/proc/stat`.
pub fn machine_cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let per_tick = |n: u64| Duration::from_micros(n * 1_000_000 / clock_ticks_per_second());
    Some((per_tick(total - idle), per_tick(total)))
}

/// `(VmRSS, VmHWM)` of `pid` in bytes from `/proc/<pid>/status`.
pub fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
