//! `roost-serve.json` in the data directory: what a running `roost serve` tells the other
//! commands (`simulate`, `bench`, `user`, `token`) about itself, so that they reach its broker
//! and its database without repeating its flags. Written once its listeners are bound, owner
//! readable only (it holds the database URL), removed when it stops.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub const FILE: &str = "roost-serve.json";

/// Locked by the `roost serve` running from the directory, for as long as it runs.
pub const LOCK_FILE: &str = "roost-serve.lock";

/// The data directory's lock, held by the one server running from it: a second one would share
/// its SQLite file and broker state, and the first to stop would remove the `roost-serve.json`
/// through which the other commands find the one still running. The kernel gives the lock back
/// when the process ends, however it ends (no stale lock after a crash or a reboot).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock of `dir` (which exists), or says which server holds it.
    pub async fn take(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .await
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?
            .into_std()
            .await;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let described = tokio::fs::read(dir.join(FILE)).await.ok();
                let holder =
                    described.and_then(|bytes| RunningServer::parse(&bytes)).map(|s| format!(" (pid {})", s.pid)).unwrap_or_default();
                anyhow::bail!(
                    "another roost serve{holder} runs from this data directory ({}): stop it first, or give this one its own --data-dir",
                    dir.display()
                )
            }
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningServer {
    pub pid: u32,
    /// `mqtt://HOST:PORT`, reachable from this machine.
    pub mqtt: String,
    /// `http://HOST:PORT` (the dashboard and the API).
    pub http: String,
    /// The database URL, password included.
    pub database: String,
}

/// An address a client on this machine can connect to: a listener on every interface
/// (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

impl RunningServer {
    /// `broker`: where clients publish, as a URL (see [`RunningServer::local_broker`]).
    pub fn new(broker: String, http: SocketAddr, tls: bool, database: &str) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self { pid: std::process::id(), mqtt: broker, http: format!("{scheme}://{}", reachable(http)), database: database.to_owned() }
    }

    /// The URL of a broker listening on `addr` here.
    pub fn local_broker(addr: SocketAddr) -> String {
        format!("mqtt://{}", reachable(addr))
    }

    /// Writes the file into `dir` (mode 0600); returns its path. The content goes into a
    /// temporary file first, renamed over the file once whole: a command reading it at that
    /// moment sees all of it, never an empty or half-written file (which it would take for "no
    /// server runs here").
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let path = dir.join(FILE);
        let partial = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
        // One left by a server killed while writing it (the same pid, as in a container) is
        // replaced, not reused: the mode applies to a new file only.
        let _ = std::fs::remove_file(&partial);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&partial)
            .and_then(|mut file| file.write_all(serde_json::to_string_pretty(self).expect("plain fields serialise").as_bytes()))
            .and_then(|()| std::fs::rename(&partial, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written.map(|()| path)
    }

    /// Removes the file from `dir` if it is this process's.
    pub fn remove(dir: &Path) {
        let path = dir.join(FILE);
        if Self::read(&path).is_some_and(|s| s.pid == std::process::id()) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read(path).ok()?)
    }

    /// The file's content; `None` if it is not one this version writes.
    fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The server described in `dir`, if there is one and its process still runs (a file left
    /// by a killed server is ignored, with a warning).
    pub fn find(dir: &Path) -> Option<(Self, PathBuf)> {
        let path = dir.join(FILE);
        let server = Self::read(&path)?;
        if !process_runs(server.pid) {
            tracing::warn!(file = %path.display(), pid = server.pid, "ignoring the file of a server that no longer runs");
            return None;
        }
        Some((server, path))
    }
}

fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists (and may be signalled).
    let result = unsafe { libc::kill(pid, 0) };
    let exists = result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// A process that has ended but was not reaped by its parent yet (a server killed a moment
/// ago) still exists for `kill`; Linux shows it in state `Z`.
fn is_zombie(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `PID (COMMAND) STATE …`: the command may hold spaces and parentheses, the state follows
    // the last `)`.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_interface_is_reached_on_loopback() {
        let server = RunningServer::new(
            RunningServer::local_broker("0.0.0.0:1884".parse().unwrap()),
            "[::]:8081".parse().unwrap(),
            true,
            "sqlite://r.db",
        );
        assert_eq!((server.mqtt.as_str(), server.http.as_str()), ("mqtt://127.0.0.1:1884", "https://[::1]:8081"));
    }

    /// A server described by this process.
    fn this_process() -> RunningServer {
        RunningServer::new(
            RunningServer::local_broker("127.0.0.1:1".parse().unwrap()),
            "127.0.0.1:2".parse().unwrap(),
            false,
            "sqlite://x.db",
        )
    }

    #[test]
    fn only_a_running_server_is_found_and_only_its_own_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunningServer::find(dir.path()).is_none());
        let mine = this_process();
        mine.write(dir.path()).unwrap();
        assert_eq!(RunningServer::find(dir.path()).map(|(s, _)| s), Some(mine.clone()));
        let gone = RunningServer { pid: i32::MAX as u32, ..mine.clone() };
        gone.write(dir.path()).unwrap();
        assert!(RunningServer::find(dir.path()).is_none(), "a dead process's file is ignored");
        RunningServer::remove(dir.path());
        assert!(dir.path().join(FILE).exists(), "not this process's: left alone");
        mine.write(dir.path()).unwrap();
        RunningServer::remove(dir.path());
        assert!(!dir.path().join(FILE).exists());
    }

    /// A command starting while the server writes the file reads all of it or none (it used to
    /// be truncated, then written: a reader could find it empty).
    #[test]
    fn the_file_is_never_seen_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let server = this_process();
        server.write(dir.path()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let reads = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let bytes = std::fs::read(dir.path().join(FILE)).unwrap();
                    assert!(RunningServer::parse(&bytes).is_some(), "read {} bytes: {:?}", bytes.len(), String::from_utf8_lossy(&bytes));
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            // 2,000 writes, and more until the reader (which a busy machine may start late) has
            // read a hundred times among them.
            let mut writes = 0;
            while (writes < 2_000 || reads.load(std::sync::atomic::Ordering::Relaxed) < 100) && !reader.is_finished() {
                server.write(dir.path()).unwrap();
                writes += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [FILE], "no temporary file is left behind");
    }

    #[tokio::test]
    async fn one_server_holds_a_data_directory_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::take(dir.path()).await.unwrap();
        let refused = DataDirLock::take(dir.path()).await.unwrap_err().to_string();
        assert!(refused.starts_with("another roost serve runs from this data directory"), "{refused}");
        drop(first);
        DataDirLock::take(dir.path()).await.expect("free again once the holder is gone");
    }

    #[test]
    fn a_killed_server_not_reaped_yet_does_not_run() {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        assert!(process_runs(child.id()));
        child.kill().unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z")) {
            assert!(std::time::Instant::now() < deadline, "the killed child never became a zombie");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!process_runs(child.id()), "a zombie is not a running server");
        child.wait().unwrap();
    }
}
