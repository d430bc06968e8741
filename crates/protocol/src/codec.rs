//! The message layer: typed messages to and from frames, blocking readers and writers,
//! and the incremental [`MessageDecoder`] for poll loops and async code.

use std::io::{self, Read, Write};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DecodeError, EncodeError, Error};
use crate::frame::{check_header, encode_chunks, encode_data, parse_body, DataFrame, Decoder, Frame, Kind, Stream};
use crate::message::{declared_lengths, FromAgent, ToAgent};
use crate::{CAPTURE_LIMIT, MAX_FRAME};

/// What one side receives: a message, or raw bytes of a process stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<M> {
    Message(M),
    Data(DataFrame),
}

/// A message type of one direction: [`ToAgent`] or [`FromAgent`].
pub trait Message: Sized + Serialize + DeserializeOwned {
    /// Appends this message's frames to `out` (nothing is appended on error).
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Feeds one frame; returns what it completes. `Capture` frames are held in `state`
    /// until their `Exited`.
    fn assemble(frame: Frame, state: &mut Assembly) -> Result<Option<Incoming<Self>>, DecodeError>;
}

/// Captured output received ahead of its `Exited` message.
#[derive(Debug, Default)]
pub struct Assembly {
    pending: Option<PendingCapture>,
}

#[derive(Debug)]
struct PendingCapture {
    pid: u32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Assembly {
    /// Whether no captured output is waiting for its `Exited`.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }
}

/// Appends one JSON frame holding `msg`, serialised in place.
fn encode_json<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, Kind::Json as u8]);
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len, max: MAX_FRAME });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

fn unexpected<T>(expected: &'static str, got: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::Unexpected { expected, got: got.into() })
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Json(_) => "a JSON message".into(),
        Frame::Data(d) => format!("{} data for process {}", d.stream.name(), d.pid),
        Frame::Capture(d) => format!("captured {} for process {}", d.stream.name(), d.pid),
    }
}

impl Message for ToAgent {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_json(self, out)
    }

    fn assemble(frame: Frame, _state: &mut Assembly) -> Result<Option<Incoming<Self>>, DecodeError> {
        match frame {
            Frame::Json(body) => Ok(Some(Incoming::Message(serde_json::from_slice(&body)?))),
            Frame::Data(d) if d.stream == Stream::Stdin => Ok(Some(Incoming::Data(d))),
            other => unexpected("a message or stdin data", describe(&other)),
        }
    }
}

impl Message for FromAgent {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        if let FromAgent::Exited(e) = self {
            for bytes in [&e.stdout, &e.stderr].into_iter().flatten() {
                if bytes.len() > CAPTURE_LIMIT {
                    return Err(EncodeError::CaptureTooLarge { len: bytes.len(), max: CAPTURE_LIMIT });
                }
            }
            for (stream, bytes) in [(Stream::Stdout, &e.stdout), (Stream::Stderr, &e.stderr)] {
                if let Some(bytes) = bytes {
                    encode_chunks(Kind::Capture, e.pid, stream, bytes, out);
                }
            }
        }
        encode_json(self, out).inspect_err(|_| out.truncate(start))
    }

    fn assemble(frame: Frame, state: &mut Assembly) -> Result<Option<Incoming<Self>>, DecodeError> {
        match frame {
            Frame::Data(d) if d.stream != Stream::Stdin && state.pending.is_none() => Ok(Some(Incoming::Data(d))),
            Frame::Capture(d) if d.stream != Stream::Stdin => {
                let pending = state.pending.get_or_insert_with(|| PendingCapture {
                    pid: d.pid,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                });
                if pending.pid != d.pid {
                    return unexpected("the rest of the pending capture", describe(&Frame::Capture(d)));
                }
                let buf = if d.stream == Stream::Stdout { &mut pending.stdout } else { &mut pending.stderr };
                if buf.len() + d.bytes.len() > CAPTURE_LIMIT {
                    return Err(DecodeError::CaptureTooLarge {
                        pid: d.pid,
                        stream: d.stream.name(),
                        max: CAPTURE_LIMIT,
                    });
                }
                buf.extend_from_slice(&d.bytes);
                Ok(None)
            }
            Frame::Json(body) => {
                let mut msg: FromAgent = serde_json::from_slice(&body)?;
                let pending = state.pending.take();
                match &mut msg {
                    FromAgent::Exited(e) => {
                        let (out_len, err_len) = declared_lengths(&body).unwrap_or_default();
                        let (mut out, mut err) = (Vec::new(), Vec::new());
                        if let Some(p) = pending {
                            if p.pid != e.pid {
                                return unexpected("the exit of the captured process", format!("exit of {}", e.pid));
                            }
                            (out, err) = (p.stdout, p.stderr);
                        }
                        e.stdout = attach(e.pid, "stdout", out, out_len)?;
                        e.stderr = attach(e.pid, "stderr", err, err_len)?;
                    }
                    _ if pending.is_some() => return unexpected("an exit after captured output", "another message"),
                    _ => {}
                }
                Ok(Some(Incoming::Message(msg)))
            }
            other => unexpected("a message or output data", describe(&other)),
        }
    }
}

/// Checks received captured bytes against the declared length.
fn attach(pid: u32, stream: &'static str, got: Vec<u8>, declared: Option<u64>) -> Result<Option<Vec<u8>>, DecodeError> {
    match declared {
        Some(n) if n == got.len() as u64 => Ok(Some(got)),
        None if got.is_empty() => Ok(None),
        declared => {
            Err(DecodeError::CaptureLength { pid, stream, got: got.len() as u64, declared: declared.unwrap_or(0) })
        }
    }
}

/// Incremental message decoder: push received bytes, pop messages. After an error the
/// connection is out of sync; every later call fails with [`DecodeError::Poisoned`].
#[derive(Debug)]
pub struct MessageDecoder<M> {
    frames: Decoder,
    assembly: Assembly,
    failed: bool,
    _m: PhantomData<fn() -> M>,
}

impl<M: Message> Default for MessageDecoder<M> {
    fn default() -> Self {
        Self { frames: Decoder::new(), assembly: Assembly::default(), failed: false, _m: PhantomData }
    }
}

impl<M: Message> MessageDecoder<M> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// Bytes received but not yet part of a returned message (excluding held captures).
    pub fn buffered(&self) -> usize {
        self.frames.buffered()
    }

    /// The next complete message or data frame; `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Incoming<M>>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Poisoned);
        }
        let result = self.next_inner();
        if result.is_err() {
            self.failed = true;
            self.assembly = Assembly::default();
        }
        result
    }

    fn next_inner(&mut self) -> Result<Option<Incoming<M>>, DecodeError> {
        while let Some(frame) = self.frames.next_frame()? {
            if let Some(item) = M::assemble(frame, &mut self.assembly)? {
                return Ok(Some(item));
            }
        }
        Ok(None)
    }

    /// At end of stream: an error if a frame or a capture was cut short.
    pub fn finish(&self) -> Result<(), DecodeError> {
        self.frames.finish()?;
        if self.assembly.is_idle() {
            Ok(())
        } else {
            Err(DecodeError::Truncated(0))
        }
    }
}

/// Blocking frame reader over any `Read` (a socket, a pipe, a byte slice in tests).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    assembly: Assembly,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, assembly: Assembly::default() }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next frame; `Ok(None)` at a clean end of stream (between frames). The body is
    /// read as it arrives, so a lying length field allocates no more than was sent.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        let mut head = [0u8; 4];
        let got = read_full(&mut self.inner, &mut head)?;
        if got == 0 {
            return Ok(None);
        }
        if got < head.len() {
            return Err(DecodeError::Truncated(got).into());
        }
        let len = check_header(&head)?.unwrap_or(0);
        let mut body = Vec::with_capacity(len.min(64 << 10));
        (&mut self.inner).take(len as u64).read_to_end(&mut body)?;
        if body.len() < len {
            return Err(DecodeError::Truncated(4 + body.len()).into());
        }
        Ok(Some(parse_body(body[0], &body[1..])?))
    }

    /// The next message or data frame; `Ok(None)` at a clean end of stream.
    pub fn read<M: Message>(&mut self) -> Result<Option<Incoming<M>>, Error> {
        loop {
            let Some(frame) = self.read_frame()? else {
                return if self.assembly.is_idle() { Ok(None) } else { Err(DecodeError::Truncated(0).into()) };
            };
            if let Some(item) = M::assemble(frame, &mut self.assembly)? {
                return Ok(Some(item));
            }
        }
    }
}

/// Reads until `buf` is full or end of stream; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Blocking frame writer over any `Write`; each call writes whole frames.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, buf: Vec::new() }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn send<M: Message>(&mut self, msg: &M) -> Result<(), Error> {
        self.buf.clear();
        msg.encode(&mut self.buf)?;
        self.flush_buf()
    }

    /// Raw bytes of a process stream (split into several frames when large).
    pub fn send_data(&mut self, pid: u32, stream: Stream, bytes: &[u8]) -> Result<(), Error> {
        self.buf.clear();
        encode_data(pid, stream, bytes, &mut self.buf);
        self.flush_buf()
    }

    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), Error> {
        self.buf.clear();
        frame.encode(&mut self.buf)?;
        self.flush_buf()
    }

    fn flush_buf(&mut self) -> Result<(), Error> {
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        if self.buf.capacity() > 64 << 10 {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
