//! A WebSocket text frame as the reader hands it to `actors::wire`: decode
//! it, and parse a location as the driver's path does. Must never panic,
//! and `decode` (with its one-pass path for locations) must answer exactly
//! as the general decoder does.
#![no_main]

use actors::wire::{self, ClientMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = wire::decode(text);
    let general = wire::decode_general(text);
    assert_eq!(
        format!("{:?} {:?}", decoded.message, decoded.reference),
        format!("{:?} {:?}", general.message, general.reference),
        "the location fast path answered differently"
    );
    if let Ok(ClientMessage::Location(input)) = &decoded.message {
        let _ = input.parse();
    }
    if let Err(error) = &decoded.message {
        // The error frame echoes the client's `ref`: it must encode.
        let _ = wire::error_frame(error.code(), error.message(), decoded.reference);
    }
});
