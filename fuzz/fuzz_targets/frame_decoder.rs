//! Feeds arbitrary bytes to the peer protocol's frame decoder: it must never panic, and any
//! frame it accepts must survive re-encoding unchanged.
#![no_main]

use francis_transport::proto::{Request, Response};
use francis_transport::{Decoded, decode_frame, decode_message, encode_frame, frame_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the size limit, so both the "too large" path and decoding are hit.
    let (limit, bytes) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first) * 64, rest),
        None => (0, data),
    };
    let _ = frame_header(bytes, limit);
    if let Ok(Decoded::Complete { message, consumed }) = decode_frame::<Request>(bytes, limit) {
        assert!(consumed <= bytes.len());
        let again = encode_frame(&message);
        assert_eq!(decode_message::<Request>(&again, usize::MAX).unwrap(), message);
    }
    let _ = decode_message::<Response>(bytes, limit);
});
