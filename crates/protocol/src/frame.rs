//! The frame layer: length + kind + body, and an incremental decoder for non-blocking
//! readers.

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::{DATA_HEADER_LEN, HEADER_LEN, MAX_DATA, MAX_FRAME};

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A JSON message (`ToAgent` or `FromAgent`).
    Json = 1,
    /// Raw bytes of one stream of one process.
    Data = 2,
    /// A piece of the captured output that the next `Exited` carries.
    Capture = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Json),
            2 => Some(Kind::Data),
            3 => Some(Kind::Capture),
            _ => None,
        }
    }
}

/// A standard stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    pub fn from_u8(b: u8) -> Option<Stream> {
        match b {
            0 => Some(Stream::Stdin),
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The body of a `Data` or `Capture` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    pub pid: u32,
    pub stream: Stream,
    pub bytes: Vec<u8>,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The serialized JSON message, not yet parsed.
    Json(Vec<u8>),
    Data(DataFrame),
    Capture(DataFrame),
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Json(_) => Kind::Json,
            Frame::Data(_) => Kind::Data,
            Frame::Capture(_) => Kind::Capture,
        }
    }

    /// Appends the encoded frame to `out`; refuses a frame above [`MAX_FRAME`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Frame::Json(body) => encode_raw(Kind::Json, &[], body, out),
            Frame::Data(d) | Frame::Capture(d) => encode_raw(self.kind(), &data_header(d.pid, d.stream), &d.bytes, out),
        }
    }

    /// Parses the kind byte and body of one frame (the length is already checked).
    fn parse(kind: u8, body: &[u8]) -> Result<Frame, DecodeError> {
        match Kind::from_u8(kind) {
            Some(Kind::Json) => Ok(Frame::Json(body.to_vec())),
            Some(k @ (Kind::Data | Kind::Capture)) => {
                if body.len() < DATA_HEADER_LEN {
                    return Err(DecodeError::ShortData(body.len()));
                }
                let pid = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                let stream = Stream::from_u8(body[4]).ok_or(DecodeError::UnknownStream(body[4]))?;
                let d = DataFrame { pid, stream, bytes: body[DATA_HEADER_LEN..].to_vec() };
                Ok(if k == Kind::Data { Frame::Data(d) } else { Frame::Capture(d) })
            }
            None => Err(DecodeError::UnknownKind(kind)),
        }
    }
}

fn data_header(pid: u32, stream: Stream) -> [u8; DATA_HEADER_LEN] {
    let p = pid.to_le_bytes();
    [p[0], p[1], p[2], p[3], stream as u8]
}

pub(crate) fn encode_raw(kind: Kind, head: &[u8], body: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = 1 + head.len() + body.len();
    if len > MAX_FRAME {
        return Err(EncodeError::TooLarge { len, max: MAX_FRAME });
    }
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    Ok(())
}

/// Appends `bytes` as one or more frames of `kind` (`Data` or `Capture`), split at
/// [`MAX_DATA`]. Empty `bytes` produce no frame.
pub(crate) fn encode_chunks(kind: Kind, pid: u32, stream: Stream, bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_DATA) {
        // Cannot fail: every chunk fits by construction.
        let _ = encode_raw(kind, &data_header(pid, stream), chunk, out);
    }
}

/// Appends `bytes` of `stream` of `pid` as `Data` frames (several when above [`MAX_DATA`]).
pub fn encode_data(pid: u32, stream: Stream, bytes: &[u8], out: &mut Vec<u8>) {
    encode_chunks(Kind::Data, pid, stream, bytes, out);
}

/// Capacity kept by an idle decoder; a larger buffer is released once drained.
const IDLE_CAPACITY: usize = 64 << 10;

/// Incremental frame decoder: push whatever bytes arrived, then pop every complete frame.
/// Memory is bounded by one frame plus what was pushed since the last pop: a length above
/// [`MAX_FRAME`] is refused as soon as its four bytes are in. After an error it stays
/// failed ([`DecodeError::Poisoned`]).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Call [`Decoder::next_frame`] until it returns `Ok(None)` after
    /// each push.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Poisoned);
        }
        match self.parse_next() {
            Ok(Some((frame, used))) => {
                self.start += used;
                self.compact();
                Ok(Some(frame))
            }
            Ok(None) => {
                self.compact();
                Ok(None)
            }
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                self.start = 0;
                Err(e)
            }
        }
    }

    /// At end of stream: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(DecodeError::Truncated(n)),
        }
    }

    fn parse_next(&self) -> Result<Option<(Frame, usize)>, DecodeError> {
        let avail = &self.buf[self.start..];
        let Some(len) = check_header(avail)? else { return Ok(None) };
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::parse(avail[4], &avail[HEADER_LEN..4 + len])?;
        Ok(Some((frame, 4 + len)))
    }

    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.start = 0;
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        } else if self.start >= IDLE_CAPACITY && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Checks the length field at the start of `bytes`: `Ok(None)` if fewer than four bytes.
pub(crate) fn check_header(bytes: &[u8]) -> Result<Option<usize>, DecodeError> {
    if bytes.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge { len, max: MAX_FRAME });
    }
    Ok(Some(len))
}

/// Parses a complete frame whose length field was checked (for the blocking reader).
pub(crate) fn parse_body(kind: u8, body: &[u8]) -> Result<Frame, DecodeError> {
    Frame::parse(kind, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn data(pid: u32, stream: Stream, bytes: &[u8]) -> DataFrame {
        DataFrame { pid, stream, bytes: bytes.to_vec() }
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = vec![
            Frame::Json(br#"{"type":"ping","id":1}"#.to_vec()),
            Frame::Data(data(7, Stream::Stdout, b"hello")),
            Frame::Capture(data(u32::MAX, Stream::Stderr, b"")),
            Frame::Data(data(0, Stream::Stdin, &[0u8; 70_000])),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        // Every split size, including one byte at a time.
        for step in [1, 2, 3, 5, 4096, wire.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, frames);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn layout_is_length_kind_body() {
        let mut out = Vec::new();
        Frame::Data(data(0x01020304, Stream::Stderr, b"ab")).encode(&mut out).unwrap();
        assert_eq!(out, vec![8, 0, 0, 0, 2, 4, 3, 2, 1, 2, b'a', b'b']);
    }

    #[test]
    fn oversized_is_refused_from_the_header_alone() {
        let mut d = Decoder::new();
        d.push(&((MAX_FRAME + 1) as u32).to_le_bytes());
        assert!(matches!(d.next_frame(), Err(DecodeError::TooLarge { .. })));
        // Poisoned afterwards, and it dropped its buffer.
        d.push(&[1, 0, 0, 0, 1]);
        assert!(matches!(d.next_frame(), Err(DecodeError::Poisoned)));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn malformed_frames_are_errors() {
        type Check = fn(&DecodeError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (vec![0, 0, 0, 0], |e| matches!(e, DecodeError::Empty)),
            (vec![1, 0, 0, 0, 9], |e| matches!(e, DecodeError::UnknownKind(9))),
            (vec![1, 0, 0, 0, 0], |e| matches!(e, DecodeError::UnknownKind(0))),
            (vec![3, 0, 0, 0, 2, 1, 2], |e| matches!(e, DecodeError::ShortData(2))),
            (vec![6, 0, 0, 0, 3, 1, 0, 0, 0, 3], |e| matches!(e, DecodeError::UnknownStream(3))),
            (vec![0xff, 0xff, 0xff, 0xff], |e| matches!(e, DecodeError::TooLarge { .. })),
        ];
        for (bytes, expect) in cases {
            let mut d = Decoder::new();
            d.push(&bytes);
            let err = d.next_frame().unwrap_err();
            assert!(expect(&err), "{bytes:?} gave {err:?}");
        }
    }

    #[test]
    fn truncated_input_waits_then_fails_at_end() {
        let mut wire = Vec::new();
        Frame::Json(b"{}".to_vec()).encode(&mut wire).unwrap();
        for cut in 1..wire.len() {
            let mut d = Decoder::new();
            d.push(&wire[..cut]);
            assert!(d.next_frame().unwrap().is_none());
            assert!(matches!(d.finish(), Err(DecodeError::Truncated(n)) if n == cut));
        }
    }

    #[test]
    fn encoding_refuses_oversized_and_data_splits() {
        let mut out = Vec::new();
        assert!(Frame::Json(vec![b' '; MAX_FRAME]).encode(&mut out).is_err());
        assert!(out.is_empty());
        Frame::Json(vec![b' '; MAX_FRAME - 1]).encode(&mut out).unwrap();
        out.clear();
        let big = vec![7u8; MAX_DATA * 2 + 3];
        encode_data(5, Stream::Stdout, &big, &mut out);
        let mut d = Decoder::new();
        d.push(&out);
        let mut total = 0;
        let mut n = 0;
        while let Some(Frame::Data(f)) = d.next_frame().unwrap() {
            total += f.bytes.len();
            n += 1;
        }
        assert_eq!((n, total), (3, big.len()));
    }

    #[test]
    fn a_drained_decoder_releases_a_large_buffer() {
        let mut wire = Vec::new();
        encode_data(1, Stream::Stdout, &vec![0u8; 1 << 20], &mut wire);
        let mut d = Decoder::new();
        d.push(&wire);
        assert!(d.next_frame().unwrap().is_some());
        assert!(d.next_frame().unwrap().is_none());
        assert!(d.buf.capacity() <= IDLE_CAPACITY);
    }
}
