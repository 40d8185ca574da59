//! `roost export`: every matching sensor's readings in a time range, sensor by sensor, oldest
//! first, streamed from the database to the output.

use super::format::{Format, Row, RowWriter};
use super::Progress;
use crate::ingest::TopicTemplate;
use crate::model::TimestampMs;
use crate::progress::group;
use crate::store::Store;
use mqtt_codec::TopicFilter;
use std::io::Write;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub from: TimestampMs,
    pub to: TimestampMs,
    /// Only sensors with a topic (under one of `templates`) that matches.
    pub filter: Option<TopicFilter>,
    pub templates: Vec<TopicTemplate>,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub sensors: u64,
    pub readings: u64,
}

/// Writes the readings `options` select to `out`; the summary of what was written.
pub async fn export(
    store: &Store,
    options: &ExportOptions,
    out: Box<dyn Write + Send>,
    mut progress: Progress,
) -> anyhow::Result<ExportSummary> {
    let sensors: Vec<_> = store
        .sensors()
        .await?
        .into_iter()
        .filter(|s| {
            options
                .filter
                .as_ref()
                .is_none_or(|filter| TopicTemplate::topics_of(&options.templates, &s.key).iter().any(|t| filter.matches(t)))
        })
        .collect();
    let (rows_tx, mut rows_rx) = tokio::sync::mpsc::channel::<Vec<Row>>(4);
    let format = options.format;
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut writer = RowWriter::new(format, std::io::BufWriter::new(out))?;
        while let Some(rows) = rows_rx.blocking_recv() {
            for row in &rows {
                writer.write(row)?;
            }
        }
        writer.flush()
    });
    let mut summary = ExportSummary::default();
    let total = sensors.len();
    for (n, sensor) in sensors.into_iter().enumerate() {
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel(2);
        let reading = store.stream_readings(sensor.id, options.from, options.to, chunks_tx, None);
        let forwarding = async {
            let mut any = false;
            while let Some(chunk) = chunks.recv().await {
                let rows: Vec<Row> =
                    chunk?.into_iter().map(|(ts, value)| Row { sensor: sensor.key.clone(), ts: TimestampMs(ts), value }).collect();
                any |= !rows.is_empty();
                summary.readings += rows.len() as u64;
                if rows_tx.send(rows).await.is_err() {
                    break; // The writer failed: its error is reported below.
                }
                progress.update(|| format!("export: {} readings · sensor {}/{total}", group(summary.readings), n + 1));
            }
            summary.sensors += u64::from(any);
            Ok::<_, anyhow::Error>(())
        };
        let ((), forwarded) = tokio::join!(reading, forwarding);
        forwarded?;
    }
    drop(rows_tx);
    writer.await??;
    progress.finish();
    Ok(summary)
}
