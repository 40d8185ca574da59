//! Starting the servers a benchmark measures: which `roost` binary, and waiting until one
//! listens.

use anyhow::bail;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `roost` binary given, or the one built next to this benchmark.
pub fn roost_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?.with_file_name("roost"),
    })
}

/// Waits until `addr` takes connections, for `limit` at most; `what` names the server in the
/// error.
pub async fn wait_listening(addr: SocketAddr, what: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
