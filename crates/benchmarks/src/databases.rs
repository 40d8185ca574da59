//! Benchmark databases on the machine's servers, re-created empty for each run.

use anyhow::Context;

/// An empty database for `db`: `sqlite` is a new file `name` in `dir`; a postgres:// or
/// mysql:// URL is re-created ([`recreate`]). Returns the URL to open.
pub fn fresh_url(db: &str, dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    if db == "sqlite" {
        return Ok(format!("sqlite://{}", dir.join(name).display()));
    }
    recreate(db)?;
    Ok(db.to_owned())
}

/// Drops and re-creates the database named at the end of a postgres:// or mysql:// URL, with
/// the server's own command-line client.
pub fn recreate(url: &str) -> anyhow::Result<()> {
    let (server, name) = url.rsplit_once('/').context("URL without a database name")?;
    let status = if url.starts_with("postgres") {
        std::process::Command::new("psql")
            .args([
                &format!("{server}/postgres"),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {name}"),
                "-c",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()?
    } else {
        std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e", &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}")])
            .status()?
    };
    anyhow::ensure!(status.success(), "could not re-create {url}");
    Ok(())
}
