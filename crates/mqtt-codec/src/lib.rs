//! MQTT 3.1.1 and 5.0 packets: types, a decoder that never panics, and an encoder. Pure: no I/O.
//!
//! The decoder separates "need more bytes" (`Ok(None)`) from "malformed" (`Err`), and every
//! error names the normative statement of the spec it enforces.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod topic;

pub use decode::{decode, decode_varint};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, Property};
pub use topic::{TopicError, TopicFilter, TopicName};

/// Largest value the variable byte integer of a fixed header can hold (MQTT 3.1.1 §2.2.3).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;
