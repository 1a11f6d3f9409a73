//! Test helpers shared by webex-push's crates: a fresh Postgres database per test
//! (dropped afterwards), a throwaway SQLite file, webhook bodies as Webex sends them
//! ([`webex_fixtures`]), and waiting for a condition instead of sleeping
//! ([`eventually()`]).
//!
//! Postgres comes from `TEST_DATABASE_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`) when it is set; otherwise one
//! throwaway cluster per test process is started from the installed PostgreSQL server
//! binaries and removed when the process exits. Helpers panic with a message that says
//! what to do: a test that cannot get its database fails, it is never skipped.

mod eventually;
pub mod webex_fixtures;

pub use eventually::{eventually, eventually_explained};

use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

/// The variable naming an admin URL of an existing Postgres server.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// How long a throwaway cluster may take to accept connections.
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh, empty Postgres database with a random name, dropped (even with open
/// connections) when this value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a new database on `TEST_DATABASE_URL`'s server or on this process's
    /// throwaway cluster.
    ///
    /// # Panics
    /// When no server can be reached or started; the message says what to install or set.
    pub fn postgres() -> Self {
        let admin_url = admin_url();
        let name = format!("webex_push_test_{:016x}", rand::random::<u64>());
        let mut admin = connect(&admin_url);
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .unwrap_or_else(|e| panic!("creating test database {name} failed: {e}"));
        let url = with_database(&admin_url, &name);
        Self {
            name,
            url,
            admin_url,
        }
    }

    /// The URL of this test's database (for the code under test).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin URL of the server holding the database (its `postgres` database).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Runs `sql` on the server's admin database, e.g. to terminate this database's
    /// connections or refuse new ones and so simulate an outage.
    ///
    /// # Panics
    /// When the statement fails.
    pub fn admin_execute(&self, sql: &str) {
        let mut admin = connect(&self.admin_url);
        diesel::sql_query(sql)
            .execute(&mut admin)
            .unwrap_or_else(|e| panic!("admin statement {sql:?} failed: {e}"));
    }

    /// Refuses new connections to this database and ends the open ones: from the
    /// application's side, the database is down.
    pub fn take_offline(&self) {
        self.admin_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS false",
            self.name
        ));
        self.terminate_connections();
    }

    /// Accepts connections again after [`TestDatabase::take_offline`].
    pub fn bring_online(&self) {
        self.admin_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS true",
            self.name
        ));
    }

    /// Ends every open connection to this database (a server restart, as the
    /// application sees it).
    pub fn terminate_connections(&self) {
        self.admin_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            self.name
        ));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Best effort: a failing drop must not turn a passing test into a panic-in-drop.
        match PgConnection::establish(&self.admin_url) {
            Ok(mut admin) => {
                let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                if let Err(e) = diesel::sql_query(sql).execute(&mut admin) {
                    eprintln!("warning: dropping test database {} failed: {e}", self.name);
                }
            }
            Err(e) => eprintln!(
                "warning: cannot connect to drop test database {}: {e}",
                self.name
            ),
        }
    }
}

/// A SQLite database file in its own temporary directory, removed on drop.
pub struct TestSqlite {
    dir: tempfile::TempDir,
}

impl TestSqlite {
    /// # Panics
    /// When no temporary directory can be created.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("webex-push-sqlite-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        Self { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("webex-push.db")
    }

    /// `sqlite://<path>`, as `DATABASE_URL` would carry it.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }
}

impl Default for TestSqlite {
    fn default() -> Self {
        Self::new()
    }
}

/// Replaces the database of a `postgres://` URL, keeping user, host and parameters.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url)
        .unwrap_or_else(|e| panic!("cannot connect to the test Postgres server: {e}"))
}

/// `TEST_DATABASE_URL`, or the admin URL of this process's throwaway cluster.
fn admin_url() -> String {
    if let Ok(url) = std::env::var(TEST_DATABASE_URL) {
        if !url.trim().is_empty() {
            return url;
        }
    }
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => cluster.admin_url.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// A Postgres cluster in a temporary directory, living as long as the test process.
///
/// A `static` is never dropped, so the cluster cleans up after itself: a watchdog
/// shell holds the read end of a pipe whose write end only this process has; when the
/// process exits, however it exits, the pipe closes and the watchdog stops the server
/// and removes the directory.
struct Cluster {
    admin_url: String,
    // Kept only so the pipe's write end stays open for the life of the process.
    _watchdog: Mutex<Child>,
}

impl Cluster {
    fn start() -> Result<Self, String> {
        let InitializedCluster {
            bin,
            as_postgres,
            dir,
        } = init_cluster()?;

        let mut last_error = String::new();
        // A free port can be taken between probing and binding; try a few.
        for _ in 0..3 {
            let port = free_port()?;
            match start_server(as_postgres, &bin, &dir, port) {
                Ok(watchdog) => {
                    return Ok(Self {
                        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        _watchdog: Mutex::new(watchdog),
                    });
                }
                Err(e) => last_error = e,
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(format!(
            "the throwaway PostgreSQL cluster did not start: {last_error}"
        ))
    }
}

/// A cluster directory with an initialised data directory, not yet running.
struct InitializedCluster {
    bin: PathBuf,
    /// Running as root: the cluster belongs to, and runs as, the `postgres` user.
    as_postgres: bool,
    dir: PathBuf,
}

fn init_cluster() -> Result<InitializedCluster, String> {
    let bin = find_postgres_bin()?;
    let as_postgres = running_as_root()?;
    let dir = tempfile::Builder::new()
        .prefix("webex-push-pg-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the test cluster failed: {e}"))?
        .keep();
    if as_postgres {
        // initdb refuses to run as root: the cluster belongs to the `postgres` user.
        run(Command::new("chown").arg("postgres:").arg(&dir), "chown")?;
    }
    let mut initdb = command(as_postgres, &bin.join("initdb"));
    initdb.arg("-D").arg(dir.join("data")).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]);
    if let Err(e) = run(&mut initdb, "initdb") {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(InitializedCluster {
        bin,
        as_postgres,
        dir,
    })
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start again to
/// see what the application does when its database server dies and comes back.
/// Stopped and removed on drop.
pub struct TestCluster {
    cluster: InitializedCluster,
    port: u16,
}

impl TestCluster {
    /// Initialises and starts a cluster on a free port, from the installed binaries
    /// (`TEST_DATABASE_URL` cannot help: that server must not be stopped).
    ///
    /// # Panics
    /// When the binaries are missing or the server does not start; the message says
    /// what to install.
    pub fn start() -> Self {
        let cluster = init_cluster().unwrap_or_else(|e| panic!("{e}"));
        let mut this = Self { cluster, port: 0 };
        let mut last_error = String::new();
        // A free port can be taken between probing and binding; try a few.
        for _ in 0..3 {
            this.port = free_port().unwrap_or_else(|e| panic!("{e}"));
            match this.pg_ctl_start() {
                Ok(()) => return this,
                Err(e) => last_error = e,
            }
        }
        // Unwinding drops `this`, which removes the directory.
        panic!("the test PostgreSQL cluster did not start: {last_error}");
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server the way a crash does (immediate mode: no checkpoint, clients
    /// cut off); returns once it is down.
    ///
    /// # Panics
    /// When `pg_ctl` fails.
    pub fn kill(&self) {
        self.pg_ctl_stop().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server again on the same port (crash recovery runs first); returns
    /// once it accepts connections.
    ///
    /// # Panics
    /// When the server does not start.
    pub fn restart(&self) {
        self.pg_ctl_start().unwrap_or_else(|e| panic!("{e}"));
    }

    fn pg_ctl(&self) -> Command {
        let mut pg_ctl = command(self.cluster.as_postgres, &self.cluster.bin.join("pg_ctl"));
        pg_ctl.arg("-D").arg(self.cluster.dir.join("data"));
        pg_ctl
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.cluster.dir.display()
        );
        let mut pg_ctl = self.pg_ctl();
        pg_ctl
            .arg("-l")
            .arg(self.cluster.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        run(&mut pg_ctl, "pg_ctl start").map_err(|e| {
            let log = fs::read_to_string(self.cluster.dir.join("server.log")).unwrap_or_default();
            format!("{e}\n{log}")
        })
    }

    fn pg_ctl_stop(&self) -> Result<(), String> {
        let mut pg_ctl = self.pg_ctl();
        pg_ctl.args(["-w", "-t", "60", "-m", "immediate", "stop"]);
        run(&mut pg_ctl, "pg_ctl stop")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Already stopped is fine; anything else is only worth a warning here.
        let _ = self.pg_ctl_stop();
        if let Err(e) = fs::remove_dir_all(&self.cluster.dir) {
            eprintln!(
                "warning: removing test cluster {} failed: {e}",
                self.cluster.dir.display()
            );
        }
    }
}

fn start_server(as_postgres: bool, bin: &Path, dir: &Path, port: u16) -> Result<Child, String> {
    // fd 3 keeps the pipe from this process: an asynchronous list's stdin would be
    // /dev/null otherwise. When the pipe closes, stop the server (fast shutdown), then
    // remove the directory once the server is gone.
    const SCRIPT: &str = r#"
exec 3<&0
"$1/postgres" -D "$2/data" -p "$3" -k "$2" \
    -c listen_addresses=127.0.0.1 -c max_connections=300 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    >"$2/server.log" 2>&1 </dev/null &
pid=$!
( cat <&3 >/dev/null; kill -INT "$pid" 2>/dev/null ) &
wait "$pid"
status=$?
if [ "$status" -ne 0 ]; then cat "$2/server.log" >&2; fi
rm -rf "$2"
exit "$status"
"#;
    let mut sh = command(as_postgres, Path::new("sh"));
    sh.arg("-c")
        .arg(SCRIPT)
        .arg("sh")
        .arg(bin)
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = sh
        .spawn()
        .map_err(|e| format!("starting the PostgreSQL server failed: {e}"))?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut log);
            }
            return Err(format!("postgres exited ({status}): {log}"));
        }
        match PgConnection::establish(&url) {
            Ok(_) => return Ok(child),
            Err(e) if Instant::now() > deadline => {
                let _ = child.kill();
                return Err(format!(
                    "postgres did not accept connections within {CLUSTER_START_TIMEOUT:?}: {e}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_postgres_bin() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("initdb"))
        .filter(|initdb| initdb.is_file())
        // Debian links only the client tools into PATH: follow the link to the server's bin.
        .filter_map(|initdb| fs::canonicalize(initdb).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|bin| bin.join("postgres").is_file());
    if let Some(bin) = on_path {
        return Ok(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "Postgres tests need a PostgreSQL server: no initdb/postgres found on PATH or \
         under /usr/lib/postgresql/*/bin. Install the server binaries (Debian/Ubuntu: \
         `apt-get install postgresql`), or set TEST_DATABASE_URL to an admin URL such as \
         postgres://postgres@127.0.0.1:5432/postgres"
            .to_owned()
    })
}

/// Whether this process runs as root (then the cluster runs as the `postgres` user).
fn running_as_root() -> Result<bool, String> {
    let probe = tempfile::tempfile()
        .and_then(|file| file.metadata())
        .map_err(|e| format!("probing the current user failed: {e}"))?;
    if probe.uid() != 0 {
        return Ok(false);
    }
    let has_user = Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let has_runuser = Command::new("runuser")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if has_user && has_runuser {
        Ok(true)
    } else {
        Err(
            "running as root, and initdb refuses root: a `postgres` user and `runuser` \
             are needed to start a throwaway cluster. Run the tests as a normal user, \
             or set TEST_DATABASE_URL to an admin URL such as \
             postgres://postgres@127.0.0.1:5432/postgres"
                .to_owned(),
        )
    }
}

fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("running {what} failed: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_the_rest_of_the_url_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "t3"), "postgres://h:1/t3");
    }
}
