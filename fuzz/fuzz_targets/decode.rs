//! Fuzz target: the packet decoder must never panic, and whatever it accepts must re-encode
//! and decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_codec::{decode, encode, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
            let wire_version = match &packet {
                mqtt_codec::Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            encode(&packet, wire_version, &mut out).expect("a decoded packet encodes");
            let again = decode(&mut out, wire_version, usize::MAX).expect("re-decodes").expect("complete");
            assert_eq!(again, packet);
        }
    }
});
