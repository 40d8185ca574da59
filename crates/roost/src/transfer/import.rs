//! `roost import`: rows from a file into the database through the ingest writer's own
//! `write_batch` (new sensors, readings, rollups, latest values in one transaction per chunk).
//! A reading identical to one stored (same sensor, same millisecond, same value) or to an earlier
//! row of the file is skipped, so importing a file twice adds nothing.

use super::format::{Format, Row, RowError, RowReader};
use super::Progress;
use crate::model::SensorKey;
use crate::progress::group;
use crate::store::{Batch, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;

/// Rows per transaction.
const CHUNK: usize = 5000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Rows read from the file.
    pub rows: u64,
    /// Readings written.
    pub imported: u64,
    /// Rows skipped: stored already, or repeated in the file.
    pub present: u64,
    /// Sensors the import created.
    pub new_sensors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{error}; the rows before it are imported ({} new readings): mend it and run the import again (what is stored is skipped)", group(.so_far.imported))]
    Row { error: RowError, so_far: ImportSummary },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("reading the file: {0}")]
    Read(String),
}

/// Imports every row of `input`; `size` (bytes, when known) for the progress line.
pub async fn import(
    store: &Store,
    input: Box<dyn BufRead + Send>,
    format: Format,
    size: Option<u64>,
    mut progress: Progress,
) -> Result<ImportSummary, ImportError> {
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<Result<(Vec<Row>, u64), RowError>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut reader = match RowReader::new(format, input) {
            Ok(reader) => reader,
            Err(e) => return chunks_tx.blocking_send(Err(e)).map_err(drop),
        };
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(row) = reader.next_row() {
            match row {
                Ok(row) => chunk.push(row),
                Err(e) => {
                    if !chunk.is_empty() {
                        chunks_tx.blocking_send(Ok((std::mem::take(&mut chunk), reader.position()))).map_err(drop)?;
                    }
                    return chunks_tx.blocking_send(Err(e)).map_err(drop);
                }
            }
            if chunk.len() == CHUNK {
                chunks_tx.blocking_send(Ok((std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)), reader.position()))).map_err(drop)?;
            }
        }
        chunks_tx.blocking_send(Ok((chunk, reader.position()))).map_err(drop)
    });
    let sensors_before = store.sensors().await?.len() as u64;
    let mut summary = ImportSummary::default();
    let mut ids: HashMap<SensorKey, i64> = HashMap::new();
    while let Some(chunk) = chunks.recv().await {
        let (rows, position) = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                progress.finish();
                return Err(ImportError::Row { error, so_far: summary });
            }
        };
        let read = rows.len() as u64;
        let fresh = new_rows(store, &mut ids, rows).await?;
        summary.rows += read;
        summary.imported += fresh.len() as u64;
        summary.present += read - fresh.len() as u64;
        if !fresh.is_empty() {
            let readings =
                fresh.into_iter().map(|row| crate::model::Reading { sensor: row.sensor, ts: row.ts, value: row.value }).collect();
            store.write_batch(&Batch { readings, ..Batch::default() }).await?;
            // On MariaDB/MySQL a chunk of a reading or two per sensor is staged: folded and, its
            // readings from more than 30 s ago, moved now (no server may be running to do it),
            // so that the next chunks' look-ups above read them through the index rather than
            // scan a staged table that keeps growing.
            while store.fold_minutes(crate::model::TimestampMs::now()).await?.more {}
        }
        progress.update(|| {
            let done = size.filter(|&s| s > 0 && position > 0).map(|s| format!(" · {}%", position * 100 / s)).unwrap_or_default();
            format!("import: {} rows · {} new{done}", group(summary.rows), group(summary.imported))
        });
    }
    reader.await.map_err(|e| ImportError::Read(e.to_string()))?.map_err(|()| ImportError::Read("the reader stopped".into()))?;
    progress.finish();
    summary.new_sensors = (store.sensors().await?.len() as u64).saturating_sub(sensors_before);
    Ok(summary)
}

/// The rows of `rows` not stored yet and not repeated earlier in `rows`.
async fn new_rows(store: &Store, ids: &mut HashMap<SensorKey, i64>, rows: Vec<Row>) -> Result<Vec<Row>, StoreError> {
    let mut by_sensor: HashMap<SensorKey, Vec<Row>> = HashMap::new();
    for row in rows {
        by_sensor.entry(row.sensor.clone()).or_default().push(row);
    }
    let mut fresh = Vec::new();
    for (sensor, rows) in by_sensor {
        let id = match ids.get(&sensor) {
            Some(id) => Some(*id),
            None => store.sensor_id(&sensor).await?,
        };
        let mut seen: HashSet<(i64, u64)> = HashSet::new();
        if let Some(id) = id {
            ids.insert(sensor, id);
            let from = rows.iter().map(|r| r.ts).min().expect("a sensor's rows are not empty");
            let to = rows.iter().map(|r| r.ts).max().expect("a sensor's rows are not empty");
            let stored = store.readings_by_id(id, from, crate::model::TimestampMs(to.0 + 1), i64::MAX).await?;
            seen.extend(stored.into_iter().map(|(ts, value)| (ts, value.to_bits())));
        }
        fresh.extend(rows.into_iter().filter(|row| seen.insert((row.ts.0, row.value.to_bits()))));
    }
    Ok(fresh)
}
