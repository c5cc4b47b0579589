//! Framing: one protobuf message prefixed by its length as a protobuf varint (the format of
//! prost's `encode_length_delimited`). Pure functions over bytes, shared by the stream reader,
//! the property tests and the fuzz target.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::error::TransportError;

/// Longest varint length prefix, in bytes.
pub const MAX_HEADER_LEN: usize = 10;

/// The parsed length prefix of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes taken by the varint prefix.
    pub header_len: usize,
    /// Bytes of the message that follows.
    pub body_len: usize,
}

impl FrameHeader {
    /// Prefix plus body.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.body_len
    }
}

/// The result of [`decode_frame`] on a buffer that holds the start of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<M> {
    /// A whole frame was decoded from the first `consumed` bytes.
    Complete {
        /// The message.
        message: M,
        /// Length prefix plus body.
        consumed: usize,
    },
    /// More bytes are needed: at least `needed` more.
    Incomplete {
        /// Minimum number of further bytes before a decision can be made (at least 1).
        needed: usize,
    },
}

/// Parses the length prefix at the start of `buf`.
///
/// `Ok(None)` means the prefix is not complete yet. A declared length above `max_size` is
/// [`TransportError::FrameTooLarge`] as soon as the prefix is complete, before any of the body
/// is needed; a prefix longer than 10 bytes or overflowing 64 bits is
/// [`TransportError::FrameLength`]. Never panics.
pub fn frame_header(buf: &[u8], max_size: usize) -> Result<Option<FrameHeader>, TransportError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_HEADER_LEN).enumerate() {
        if i == MAX_HEADER_LEN - 1 && byte > 1 {
            return Err(TransportError::FrameLength("varint overflows 64 bits"));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if value > max_size as u64 {
                return Err(TransportError::FrameTooLarge {
                    declared: value,
                    max: max_size,
                });
            }
            return Ok(Some(FrameHeader {
                header_len: i + 1,
                // value <= max_size, a usize
                body_len: value as usize,
            }));
        }
    }
    if buf.len() >= MAX_HEADER_LEN {
        return Err(TransportError::FrameLength("varint longer than 10 bytes"));
    }
    Ok(None)
}

/// Decodes the frame at the start of `buf`, if it is all there.
///
/// Refuses a declared length above `max_size` before looking at the body
/// ([`TransportError::FrameTooLarge`]); a complete body that is not a valid `M` is
/// [`TransportError::FrameDecode`]. Bytes after the frame are left alone (`consumed` says where
/// the frame ended). Never panics, whatever the input.
pub fn decode_frame<M: Message + Default>(
    buf: &[u8],
    max_size: usize,
) -> Result<Decoded<M>, TransportError> {
    let Some(header) = frame_header(buf, max_size)? else {
        return Ok(Decoded::Incomplete { needed: 1 });
    };
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Ok(Decoded::Incomplete {
            needed: frame_len - buf.len(),
        });
    }
    let message =
        M::decode(&buf[header.header_len..frame_len]).map_err(|e| TransportError::FrameDecode {
            message: short_type_name::<M>(),
            reason: e.to_string(),
        })?;
    Ok(Decoded::Complete {
        message,
        consumed: frame_len,
    })
}

/// Decodes a buffer that must hold exactly one frame (a whole stream's content).
///
/// Besides the errors of [`decode_frame`]: a buffer that ends inside the frame is
/// [`TransportError::FrameTruncated`], and bytes after the frame are
/// [`TransportError::FrameTrailingBytes`]. Never panics.
pub fn decode_message<M: Message + Default>(
    buf: &[u8],
    max_size: usize,
) -> Result<M, TransportError> {
    match decode_frame::<M>(buf, max_size)? {
        Decoded::Complete { message, consumed } if consumed == buf.len() => Ok(message),
        Decoded::Complete { consumed, .. } => Err(TransportError::FrameTrailingBytes {
            extra: buf.len() - consumed,
        }),
        Decoded::Incomplete { needed } => Err(TransportError::FrameTruncated {
            expected: buf.len() + needed,
            received: buf.len(),
        }),
    }
}

/// Encodes `message` as one frame: its length as a varint, then the message.
pub fn encode_frame<M: Message>(message: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len() + MAX_HEADER_LEN);
    message
        .encode_length_delimited(&mut buf)
        .expect("BytesMut grows as needed");
    buf.freeze()
}

fn short_type_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Invoke, Ping, Request, request};

    fn invoke_request() -> Request {
        Request {
            body: Some(request::Body::Invoke(Invoke {
                actor_type: "t".into(),
                actor_id: "a".into(),
                method: "m".into(),
                payload: Bytes::from_static(b"{\"x\":1}"),
                request_id: "r".into(),
                read_only: false,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let msg = invoke_request();
        let frame = encode_frame(&msg);
        assert_eq!(decode_message::<Request>(&frame, 1024).unwrap(), msg);
        for cut in 0..frame.len() {
            match decode_frame::<Request>(&frame[..cut], 1024).unwrap() {
                Decoded::Incomplete { needed } => {
                    assert!(needed >= 1 && cut + needed <= frame.len())
                }
                Decoded::Complete { .. } => panic!("complete at {cut} of {}", frame.len()),
            }
            assert!(matches!(
                decode_message::<Request>(&frame[..cut], 1024),
                Err(TransportError::FrameTruncated { .. })
            ));
        }
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        match decode_frame::<Request>(&two, 1024).unwrap() {
            Decoded::Complete { message, consumed } => {
                assert_eq!(message, msg);
                assert_eq!(consumed, frame.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_message::<Request>(&two, 1024),
            Err(TransportError::FrameTrailingBytes { extra }) if extra == frame.len()
        ));
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        // 1 MiB declared, no body at all.
        let mut header = BytesMut::new();
        prost::encoding::encode_varint(1 << 20, &mut header);
        let err = decode_frame::<Request>(&header, 1024).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { declared, max: 1024 } if declared == 1 << 20)
        );
        assert!(err.to_string().contains("exceeds the maximum message size"));
        // Exactly at the limit is fine.
        let ping = Request {
            body: Some(request::Body::Ping(Ping { nonce: 7 })),
        };
        let frame = encode_frame(&ping);
        let body = frame.len() - 1;
        assert_eq!(decode_message::<Request>(&frame, body).unwrap(), ping);
        assert!(decode_message::<Request>(&frame, body - 1).is_err());
    }

    #[test]
    fn bad_prefixes_and_bodies() {
        assert!(matches!(
            frame_header(&[0xff; 10], usize::MAX),
            Err(TransportError::FrameLength(_))
        ));
        assert!(matches!(
            frame_header(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                usize::MAX
            ),
            Err(TransportError::FrameLength(_))
        ));
        assert_eq!(frame_header(&[0xff; 9], usize::MAX).unwrap(), None);
        assert_eq!(
            frame_header(&[0x00], 0).unwrap(),
            Some(FrameHeader {
                header_len: 1,
                body_len: 0
            })
        );
        // A length of 3 followed by bytes that are not protobuf.
        let err = decode_message::<Request>(&[3, 0xff, 0xff, 0xff], 1024).unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::FrameDecode {
                    message: "Request",
                    ..
                }
            ),
            "{err}"
        );
    }
}
