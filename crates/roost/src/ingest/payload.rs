//! Payloads to numbers: text (`23.4`, ` 23 `, `-1e3`), JSON numbers, `{"value": .., "ts": ..}`,
//! and for category-less templates a JSON object of category → number. Pure functions.

use crate::model::{RejectReason, TimestampMs};
use serde_json::{Map, Value};

/// One value for one sensor, with the device's timestamp if it sent one.
pub fn parse_single(payload: &[u8]) -> Result<(f64, Option<TimestampMs>), RejectReason> {
    let text = text_of(payload)?;
    if text.starts_with('{') {
        let object = json_object(text)?;
        let value = object.get("value").ok_or(RejectReason::BadJson)?;
        for key in object.keys() {
            if key != "value" && key != "ts" {
                return Err(RejectReason::BadJson);
            }
        }
        return Ok((json_number(value)?, timestamp(object.get("ts"))?));
    }
    let value: f64 = text.parse().map_err(|_| RejectReason::NotANumber)?;
    finite(value).map(|v| (v, None))
}

/// Values by category, from a JSON object.
pub type CategoryValues = Vec<(String, f64)>;

/// A JSON object of category → number, plus an optional `ts`.
pub fn parse_multi(payload: &[u8]) -> Result<(CategoryValues, Option<TimestampMs>), RejectReason> {
    let text = text_of(payload)?;
    let object = json_object(text)?;
    let mut values = Vec::with_capacity(object.len());
    for (key, value) in &object {
        if key == "ts" {
            continue;
        }
        if key.is_empty() || key.contains(['/', '+', '#', '\0']) {
            return Err(RejectReason::BadJson);
        }
        values.push((key.clone(), json_number(value)?));
    }
    if values.is_empty() {
        return Err(RejectReason::BadJson);
    }
    Ok((values, timestamp(object.get("ts"))?))
}

fn text_of(payload: &[u8]) -> Result<&str, RejectReason> {
    let text = std::str::from_utf8(payload).map_err(|_| RejectReason::InvalidUtf8)?.trim();
    if text.is_empty() {
        return Err(RejectReason::Empty);
    }
    Ok(text)
}

fn json_object(text: &str) -> Result<Map<String, Value>, RejectReason> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(RejectReason::BadJson),
    }
}

fn json_number(value: &Value) -> Result<f64, RejectReason> {
    value.as_f64().ok_or(RejectReason::NotANumber).and_then(finite)
}

fn finite(value: f64) -> Result<f64, RejectReason> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(RejectReason::NotFinite)
    }
}

/// `ts` as epoch milliseconds or seconds (a number; see [`TimestampMs::from_epoch_number`]) or
/// RFC 3339 (a string).
fn timestamp(ts: Option<&Value>) -> Result<Option<TimestampMs>, RejectReason> {
    let ms = match ts {
        None => return Ok(None),
        Some(Value::Number(n)) => {
            let number = n.as_f64().ok_or(RejectReason::BadTimestamp)?;
            TimestampMs::from_epoch_number(number).ok_or(RejectReason::BadTimestamp)?.0
        }
        Some(Value::String(s)) => {
            let t =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| RejectReason::BadTimestamp)?;
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            i64::try_from(ms).ok().filter(|ms| (0..=TimestampMs::MAX.0).contains(ms)).ok_or(RejectReason::BadTimestamp)?
        }
        Some(_) => return Err(RejectReason::BadTimestamp),
    };
    Ok(Some(TimestampMs(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_contract_payloads_parse() {
        assert_eq!(parse_single(b"23.4"), Ok((23.4, None)));
        assert_eq!(parse_single(b" 23 \n"), Ok((23.0, None)));
        assert_eq!(parse_single(b"-1e3"), Ok((-1000.0, None)));
        assert_eq!(parse_single(br#"{"value": 23.4, "ts": 1700000000000}"#), Ok((23.4, Some(TimestampMs(1_700_000_000_000)))));
        assert_eq!(parse_single(br#"{"value": 5, "ts": "2023-11-14T22:13:20Z"}"#), Ok((5.0, Some(TimestampMs(1_700_000_000_000)))));
        assert_eq!(
            parse_multi(br#"{"temperature": 21.5, "humidity": 40, "ts": "2023-11-14T23:13:20+01:00"}"#),
            Ok((vec![("humidity".into(), 40.0), ("temperature".into(), 21.5)], Some(TimestampMs(1_700_000_000_000))))
        );
    }

    #[test]
    fn bad_payloads_are_rejected_with_their_reason() {
        assert_eq!(parse_single(b"abc"), Err(RejectReason::NotANumber));
        assert_eq!(parse_single(b""), Err(RejectReason::Empty));
        assert_eq!(parse_single(b"   "), Err(RejectReason::Empty));
        assert_eq!(parse_single(b"nan"), Err(RejectReason::NotFinite));
        assert_eq!(parse_single(b"inf"), Err(RejectReason::NotFinite));
        assert_eq!(parse_single(b"-infinity"), Err(RejectReason::NotFinite));
        assert_eq!(parse_single(b"1e999"), Err(RejectReason::NotFinite));
        assert_eq!(parse_single(&[0xff, 0xfe]), Err(RejectReason::InvalidUtf8));
        assert_eq!(parse_single(br#""23.4""#), Err(RejectReason::NotANumber));
        assert_eq!(parse_single(br#"{"value": "x"}"#), Err(RejectReason::NotANumber));
        assert_eq!(parse_single(br#"{"val": 1}"#), Err(RejectReason::BadJson));
        // What another key says is not dropped unread (README: a misspelt `ts`).
        assert_eq!(parse_single(br#"{"value": 1, "timestamp": 1700000000}"#), Err(RejectReason::BadJson));
        assert_eq!(parse_single(br#"{"value": 1, "unit": "C"}"#), Err(RejectReason::BadJson));
        assert_eq!(parse_single(br#"{"value": 1, "ts": "yesterday"}"#), Err(RejectReason::BadTimestamp));
        assert_eq!(parse_single(br#"{"value": 1, "ts": -5}"#), Err(RejectReason::BadTimestamp));
        // Seconds, as boards that keep time by NTP send them, whole or with a fraction.
        assert_eq!(parse_single(br#"{"value": 1, "ts": 1700000000}"#), Ok((1.0, Some(TimestampMs(1_700_000_000_000)))));
        assert_eq!(parse_single(br#"{"value": 1, "ts": 1700000000.25}"#), Ok((1.0, Some(TimestampMs(1_700_000_000_250)))));
        assert_eq!(parse_single(br#"{"value": 1, "ts": 1080792516.169}"#), Ok((1.0, Some(TimestampMs(1_080_792_516_169)))));
        assert_eq!(parse_single(br#"{"value": 1, "ts": 1.7e9}"#), Ok((1.0, Some(TimestampMs(1_700_000_000_000)))));
        assert_eq!(parse_single(br#"{"value": 1, "ts": 99999999999}"#), Ok((1.0, Some(TimestampMs(99_999_999_999_000)))));
        assert_eq!(parse_single(br#"{"value": 1, "ts": 100000000000}"#), Ok((1.0, Some(TimestampMs(100_000_000_000)))));
        assert_eq!(parse_multi(b"{}"), Err(RejectReason::BadJson));
        assert_eq!(parse_multi(b"23.4"), Err(RejectReason::BadJson));
        assert_eq!(parse_multi(br#"{"a/b": 1}"#), Err(RejectReason::BadJson));
        assert_eq!(parse_multi(br#"{"t": null}"#), Err(RejectReason::NotANumber));
    }

    proptest! {
        #[test]
        fn finite_numbers_round_trip_through_text(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            prop_assert_eq!(parse_single(v.to_string().as_bytes()), Ok((v, None)));
            prop_assert_eq!(parse_single(format!("{{\"value\": {v}}}").as_bytes()).map(|(x, _)| x), Ok(v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_single(&bytes);
            let _ = parse_multi(&bytes);
        }
    }
}
