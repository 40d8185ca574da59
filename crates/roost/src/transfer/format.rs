//! The files `roost export` writes and `roost import` reads: one reading per row, as CSV with a
//! header or as JSON Lines, with the same fields: `time` (RFC 3339, UTC, to the millisecond),
//! `owner`, `place`, `category`, `value`. Import also takes a number for the time, in `time` or
//! in `ts_ms`, read as an MQTT payload's `ts` is (epoch milliseconds, or epoch seconds below
//! 100,000,000,000), a value given as a numeric string, and columns in any order. Pure: no files
//! here.

use crate::model::{SensorKey, TimestampMs};
use std::io::{BufRead, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The format a file name says (`.csv`, `.jsonl`, `.ndjson`).
    pub fn of_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// The format of input without a name (standard input), from its start, which stays
    /// unread: JSON Lines if its first text is a `{`, else CSV (whose header starts with a
    /// column's name).
    pub fn sniff(input: &mut impl BufRead) -> std::io::Result<Self> {
        let start = input.fill_buf()?;
        Ok(match start.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::Jsonl,
            _ => Self::Csv,
        })
    }
}

/// One reading of one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub sensor: SensorKey,
    pub ts: TimestampMs,
    pub value: f64,
}

const FIELDS: [&str; 5] = ["time", "owner", "place", "category", "value"];

/// Writes rows in a format.
pub enum RowWriter<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(W),
}

impl<W: Write> RowWriter<W> {
    /// A writer; CSV starts with its header.
    pub fn new(format: Format, out: W) -> std::io::Result<Self> {
        Ok(match format {
            Format::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(FIELDS)?;
                Self::Csv(Box::new(csv))
            }
            Format::Jsonl => Self::Jsonl(out),
        })
    }

    pub fn write(&mut self, row: &Row) -> std::io::Result<()> {
        let time = row.ts.rfc3339();
        match self {
            Self::Csv(csv) => {
                // Rust prints the shortest text that reads back as the same f64.
                let value = row.value.to_string();
                csv.write_record([time.as_str(), &row.sensor.owner, &row.sensor.place, &row.sensor.category, &value])?;
            }
            Self::Jsonl(out) => {
                let line = serde_json::json!({
                    "time": time, "owner": row.sensor.owner, "place": row.sensor.place,
                    "category": row.sensor.category, "value": row.value,
                });
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Csv(csv) => csv.flush(),
            Self::Jsonl(out) => out.flush(),
        }
    }
}

/// A row that could not be read: where, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct RowError {
    pub line: u64,
    pub why: String,
}

/// Reads rows in a format; each item says its line on error.
pub enum RowReader<R: BufRead> {
    Csv { reader: csv::Reader<R>, columns: Columns, record: csv::StringRecord },
    Jsonl { input: R, line: u64, text: String },
}

/// Where each field is in a CSV record.
pub struct Columns {
    time: Option<usize>,
    ts_ms: Option<usize>,
    owner: usize,
    place: usize,
    category: usize,
    value: usize,
}

impl<R: BufRead> RowReader<R> {
    /// A reader; a CSV header must name `owner`, `place`, `category`, `value` and `time` or
    /// `ts_ms`.
    pub fn new(format: Format, input: R) -> Result<Self, RowError> {
        match format {
            Format::Csv => {
                // Names are taken as written, spaces included (they are part of a sensor's name);
                // the header, times and values may have spaces around them.
                let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::Headers).from_reader(input);
                let header = reader.headers().map_err(|e| RowError { line: 1, why: e.to_string() })?.clone();
                let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
                let need = |name: &str| {
                    find(name).ok_or_else(|| RowError {
                        line: 1,
                        why: if header.get(0).is_some_and(|first| first.starts_with('{')) {
                            "this is a JSON object, not a CSV header: for JSON Lines, give --format jsonl".into()
                        } else {
                            format!("the header has no `{name}` column (it needs owner, place, category, value and time or ts_ms)")
                        },
                    })
                };
                let columns = Columns {
                    time: find("time"),
                    ts_ms: find("ts_ms"),
                    owner: need("owner")?,
                    place: need("place")?,
                    category: need("category")?,
                    value: need("value")?,
                };
                if columns.time.is_none() && columns.ts_ms.is_none() {
                    return Err(RowError { line: 1, why: "the header has neither a `time` nor a `ts_ms` column".into() });
                }
                Ok(Self::Csv { reader, columns, record: csv::StringRecord::new() })
            }
            Format::Jsonl => Ok(Self::Jsonl { input, line: 0, text: String::new() }),
        }
    }

    /// Bytes read so far (for progress).
    pub fn position(&self) -> u64 {
        match self {
            Self::Csv { reader, .. } => reader.position().byte(),
            Self::Jsonl { .. } => 0,
        }
    }

    /// The next row, `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<Row, RowError>> {
        match self {
            Self::Csv { reader, columns, record } => {
                let line = reader.position().line();
                match reader.read_record(record) {
                    Ok(false) => None,
                    Ok(true) => {
                        let field = |i: usize| record.get(i).unwrap_or("");
                        let trimmed = |i: usize| field(i).trim();
                        let time = columns.time.map(trimmed).filter(|t| !t.is_empty()).or(columns.ts_ms.map(trimmed));
                        Some(
                            row_of(
                                time,
                                field(columns.owner),
                                field(columns.place),
                                field(columns.category),
                                Value::Text(trimmed(columns.value)),
                            )
                            .map_err(|why| RowError { line, why }),
                        )
                    }
                    Err(e) => Some(Err(RowError { line, why: e.to_string() })),
                }
            }
            Self::Jsonl { input, line, text } => loop {
                text.clear();
                *line += 1;
                match input.read_line(text) {
                    Ok(0) => return None,
                    Ok(_) if text.trim().is_empty() => continue,
                    Ok(_) => return Some(json_row(text).map_err(|why| RowError { line: *line, why })),
                    Err(e) => return Some(Err(RowError { line: *line, why: e.to_string() })),
                }
            },
        }
    }
}

enum Value<'a> {
    Text(&'a str),
    Number(f64),
}

fn json_row(text: &str) -> Result<Row, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let text_of = |name: &str| -> Result<&str, String> {
        match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(format!("`{name}` must be a string, not {other}")),
            None => Err(format!("no `{name}`")),
        }
    };
    // A string as itself, anything else (a number) as its JSON text: `row_of` reads either.
    let time = object.get("time").or_else(|| object.get("ts_ms")).map(|t| match t {
        serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    });
    let time = time.as_deref();
    let value = match object.get("value") {
        Some(serde_json::Value::Number(n)) => Value::Number(n.as_f64().ok_or("`value` is not a number")?),
        Some(serde_json::Value::String(s)) => Value::Text(s),
        Some(other) => return Err(format!("`value` must be a number, not {other}")),
        None => return Err("no `value`".into()),
    };
    row_of(time, text_of("owner")?, text_of("place")?, text_of("category")?, value)
}

fn row_of(time: Option<&str>, owner: &str, place: &str, category: &str, value: Value<'_>) -> Result<Row, String> {
    let time = time.ok_or("no `time` (or `ts_ms`)")?;
    // A number is taken as a payload's `ts` is: epoch seconds below 100,000,000,000 (as
    // milliseconds, a time before March 1973).
    let ts = match time.parse::<f64>() {
        Ok(number) => TimestampMs::from_epoch_number(number)
            .ok_or_else(|| format!("`time` {time} is not epoch milliseconds or seconds from 1970 to the end of 9999"))?,
        Err(_) => TimestampMs::parse(time).map_err(|why| format!("`time` {why}"))?,
    };
    for (name, level) in [("owner", owner), ("place", place), ("category", category)] {
        if level.contains(['/', '+', '#', '\0']) {
            return Err(format!("`{name}` {level:?} is not a topic level (no /, + or #)"));
        }
    }
    let sensor = SensorKey::new(owner, place, category).map_err(|why| format!("sensor {owner}/{place}/{category}: {why}"))?;
    let value = match value {
        Value::Number(n) => n,
        Value::Text(text) => text.parse::<f64>().map_err(|_| format!("`value` {text:?} is not a number"))?,
    };
    if !value.is_finite() {
        return Err(format!("`value` {value} is not a finite number"));
    }
    Ok(Row { sensor, ts, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                sensor: SensorKey::new("yanjo", "living, room", "temperature").unwrap(),
                ts: TimestampMs(1_700_000_000_123),
                value: 23.4,
            },
            Row { sensor: SensorKey::new("yanjo", "say \"hi\"", "humidity").unwrap(), ts: TimestampMs(0), value: 0.1 + 0.2 },
            // Spaces are part of a name: a board's topic `iot/ yanjo/sensor/sp ace /t ` is stored
            // as it came.
            Row { sensor: SensorKey::new(" yanjo", "sp ace ", " t ").unwrap(), ts: TimestampMs(1), value: -1.0 },
        ]
    }

    fn round_trip(format: Format) -> Vec<Row> {
        let mut out = Vec::new();
        let mut writer = RowWriter::new(format, &mut out).unwrap();
        for row in rows() {
            writer.write(&row).unwrap();
        }
        writer.flush().unwrap();
        drop(writer);
        let mut reader = RowReader::new(format, out.as_slice()).unwrap();
        std::iter::from_fn(|| reader.next_row()).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn both_formats_read_back_what_they_wrote_exactly() {
        assert_eq!(round_trip(Format::Csv), rows());
        assert_eq!(round_trip(Format::Jsonl), rows());
    }

    #[test]
    fn other_column_orders_epoch_times_and_text_values_are_read() {
        let csv = "value, ts_ms, category, place, owner\n 23.5 , 1700000000000 ,t,p,o\n";
        let mut reader = RowReader::new(Format::Csv, csv.as_bytes()).unwrap();
        let row = reader.next_row().unwrap().unwrap();
        assert_eq!(
            (row.ts, row.value, row.sensor.owner.as_str()),
            (TimestampMs(1_700_000_000_000), 23.5, "o"),
            "spaces around the header, times, values"
        );
        let jsonl = "{\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"time\":\"2023-11-14T22:13:20.123456Z\",\"value\":\"7\"}\n\n";
        let mut reader = RowReader::new(Format::Jsonl, jsonl.as_bytes()).unwrap();
        let row = reader.next_row().unwrap().unwrap();
        assert_eq!((row.ts, row.value), (TimestampMs(1_700_000_000_123), 7.0), "microseconds are cut to the millisecond");
        assert!(reader.next_row().is_none(), "blank lines are skipped");
    }

    #[test]
    fn bad_rows_say_their_line_and_why() {
        let csv = "time,owner,place,category,value\n2023-11-14T22:13:20Z,o,p,t,1\n2023-11-14T22:13:20Z,o,p,t,warm\nyesterday,o,p,t,1\n";
        let mut reader = RowReader::new(Format::Csv, csv.as_bytes()).unwrap();
        assert!(reader.next_row().unwrap().is_ok());
        assert_eq!(reader.next_row().unwrap().unwrap_err().to_string(), "line 3: `value` \"warm\" is not a number");
        assert!(reader
            .next_row()
            .unwrap()
            .unwrap_err()
            .to_string()
            .starts_with("line 4: `time` must be epoch milliseconds or an RFC 3339"));
        let err = RowReader::new(Format::Csv, "time,owner,place,value\n".as_bytes()).err().unwrap();
        assert!(err.to_string().contains("no `category` column"), "{err}");
        let jsonl = "{\"owner\":\"o/x\",\"place\":\"p\",\"category\":\"t\",\"ts_ms\":1700000000000,\"value\":1}\n[1]\n{\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"ts_ms\":1700000000000,\"value\":null}";
        let mut reader = RowReader::new(Format::Jsonl, jsonl.as_bytes()).unwrap();
        assert!(reader.next_row().unwrap().unwrap_err().to_string().contains("line 1: `owner` \"o/x\" is not a topic level"));
        assert!(reader.next_row().unwrap().unwrap_err().to_string().starts_with("line 2: not a JSON object"));
        assert!(reader.next_row().unwrap().unwrap_err().to_string().contains("line 3: `value` must be a number"));
    }

    #[test]
    fn epoch_seconds_are_read_as_in_a_payload() {
        let csv = "ts_ms,owner,place,category,value\n1700000000,o,p,t,1\n1080792516.169,o,p,t,1\n100000000000,o,p,t,1\n-5,o,p,t,1\n";
        let mut reader = RowReader::new(Format::Csv, csv.as_bytes()).unwrap();
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(1_700_000_000_000), "seconds, not January 1970");
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(1_080_792_516_169), "a fraction keeps its millisecond");
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(100_000_000_000), "milliseconds from March 1973 on");
        assert_eq!(
            reader.next_row().unwrap().unwrap_err().to_string(),
            "line 5: `time` -5 is not epoch milliseconds or seconds from 1970 to the end of 9999"
        );
        let jsonl = "{\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"ts_ms\":1700000000,\"value\":1}\n\
                     {\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"time\":1700000000123,\"value\":1}\n\
                     {\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"time\":\"1970-01-20T16:13:20Z\",\"value\":1}\n\
                     {\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"time\":null,\"value\":1}\n";
        let mut reader = RowReader::new(Format::Jsonl, jsonl.as_bytes()).unwrap();
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(1_700_000_000_000));
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(1_700_000_000_123), "a number in `time` too");
        assert_eq!(reader.next_row().unwrap().unwrap().ts, TimestampMs(1_700_000_000), "a time written as a date is what it says");
        assert_eq!(
            reader.next_row().unwrap().unwrap_err().to_string(),
            "line 4: `time` must be epoch milliseconds or an RFC 3339 time, not \"null\""
        );
    }

    #[test]
    fn unnamed_input_is_json_lines_when_it_starts_with_an_object() {
        let sniff = |text: &str| {
            let mut input = std::io::BufReader::new(text.as_bytes());
            let format = Format::sniff(&mut input).unwrap();
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut input, &mut rest).unwrap();
            assert_eq!(rest, text, "nothing is consumed");
            format
        };
        assert_eq!(sniff("\n  {\"owner\":\"o\"}\n"), Format::Jsonl);
        assert_eq!(sniff("time,owner,place,category,value\n"), Format::Csv);
        assert_eq!(sniff(""), Format::Csv);
        let err = RowReader::new(Format::Csv, "{\"owner\":\"o\",\"place\":\"p\"}\n".as_bytes()).err().unwrap();
        assert_eq!(err.to_string(), "line 1: this is a JSON object, not a CSV header: for JSON Lines, give --format jsonl");
    }
}
