//! `roost export` and `roost import`: readings out of one database and into any other (or the
//! same: an import skips what is stored already), as CSV or JSON Lines (`format`). File reading
//! and writing run on blocking threads, the database work on the runtime; chunks pass between
//! them through bounded channels, so memory stays flat whatever the size.

mod export;
pub mod format;
mod import;

pub use export::{export, ExportOptions, ExportSummary};
pub use format::Format;
pub use import::{import, ImportError, ImportSummary};

use crate::cli::{ExportArgs, ImportArgs};
use crate::ingest::TopicTemplate;
use crate::model::TimestampMs;
use crate::progress::group;
use crate::store::Store;
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `roost export`: to standard output, from a database that must exist.
pub async fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let (from, to) = (args.from.unwrap_or(TimestampMs(0)), args.to.unwrap_or(TimestampMs::MAX));
    anyhow::ensure!(from < to, "--from must be before --to (the range is from <= ts < to)");
    let store = Store::open_existing(&args.db.database).await?;
    let options = ExportOptions {
        from,
        to,
        filter: args.filter,
        templates: if args.templates.is_empty() { TopicTemplate::defaults() } else { args.templates },
        format: args.format,
    };
    let summary = export(&store, &options, Box::new(std::io::stdout()), Progress::default()).await;
    store.close().await;
    let reader_left = |e: &anyhow::Error| {
        e.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
    };
    if summary.as_ref().is_err_and(reader_left) {
        // `roost export | head`: the reader had enough. Not an error, as for other tools.
        return Ok(());
    }
    let summary = summary.context("exporting")?;
    // Not `eprintln!`, which panics when standard error is closed (the export is done).
    let (readings, sensors) = (summary.readings, summary.sensors);
    let _ = writeln!(
        std::io::stderr(),
        "exported {} {} of {sensors} {}",
        group(readings),
        plural(readings, "reading"),
        plural(sensors, "sensor")
    );
    Ok(())
}

/// `roost import FILE`: into the database, created and migrated if need be (moving to a new
/// PostgreSQL or MariaDB database is `roost export | roost import --database ... -`).
pub async fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let stdin = args.file.as_os_str() == "-";
    let named = match (args.format, Format::of_path(&args.file)) {
        (Some(format), _) | (None, Some(format)) => Some(format),
        (None, None) if stdin => None,
        (None, None) => {
            anyhow::bail!("cannot tell the format of {} from its name: give --format csv or --format jsonl", args.file.display())
        }
    };
    let (mut input, size): (Box<dyn std::io::BufRead + Send>, Option<u64>) = if stdin {
        (Box::new(std::io::BufReader::new(std::io::stdin())), None)
    } else {
        let file = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::new(file)), size)
    };
    let format = match named {
        Some(format) => format,
        None => Format::sniff(&mut input).context("reading standard input")?,
    };
    let store = Store::open(&args.db.database).await?;
    tracing::info!(database = %store.url(), file = %args.file.display(), "importing");
    let result = import(&store, input, format, size, Progress::default()).await;
    store.close().await;
    let summary = result?;
    let _ = writeln!(
        std::io::stderr(),
        "imported {} {} ({} new {}); {} of {} {} stored already or repeated",
        group(summary.imported),
        plural(summary.imported, "reading"),
        summary.new_sensors,
        plural(summary.new_sensors, "sensor"),
        group(summary.present),
        group(summary.rows),
        if summary.rows == 1 { "row was" } else { "rows were" },
    );
    Ok(())
}

/// A progress line on standard error, redrawn at most four times a second, only on a terminal
/// (a file or a pipe gets the summary alone).
pub struct Progress {
    terminal: bool,
    last: Option<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self { terminal: std::io::stderr().is_terminal(), last: None }
    }
}

impl Progress {
    /// A progress line that never draws (tests, scripts).
    pub fn silent() -> Self {
        Self { terminal: false, last: None }
    }

    fn update(&mut self, line: impl FnOnce() -> String) {
        if !self.terminal || self.last.is_some_and(|at| at.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.last = Some(Instant::now());
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K{}", line());
    }

    fn finish(&mut self) {
        if self.terminal && self.last.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

/// `noun`, with an `s` unless there is one.
fn plural(count: impl TryInto<u64>, noun: &str) -> String {
    if count.try_into().is_ok_and(|n| n == 1) {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}
