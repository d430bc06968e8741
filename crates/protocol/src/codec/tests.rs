use pretty_assertions::assert_eq;

use super::*;
use crate::message::{Buffered, Exited, ProcessInfo, SpawnRequest, StdinMode, WinSize};

fn to_agent_samples() -> Vec<ToAgent> {
    vec![
        ToAgent::Spawn(SpawnRequest {
            id: u64::MAX,
            argv: vec!["sh".into(), "-c".into(), "echo ✓ \"$X\"".into()],
            env: vec![("X".into(), "1=2".into())],
            cwd: Some("/workspace".into()),
            pty: Some(WinSize { rows: 50, cols: 132 }),
            stdin: StdinMode::Bytes((0..=255).collect()),
            capture: true,
            cgroup_fds: 3,
        }),
        ToAgent::Spawn(SpawnRequest {
            id: 0,
            argv: vec!["cat".into()],
            env: vec![],
            cwd: None,
            pty: None,
            stdin: StdinMode::Pipe,
            capture: false,
            cgroup_fds: 0,
        }),
        ToAgent::Stdin { pid: 1, data: b"\0\x01binary\xff".to_vec() },
        ToAgent::CloseStdin { pid: 2 },
        ToAgent::Signal { pid: 3, signal: 15 },
        ToAgent::Resize { pid: 4, rows: 1, cols: u16::MAX },
        ToAgent::List { id: 5 },
        ToAgent::Ping { id: 6 },
    ]
}

fn exited(pid: u32, stdout: Option<Vec<u8>>, stderr: Option<Vec<u8>>) -> Exited {
    Exited {
        pid,
        status: 256,
        user_us: 1,
        sys_us: 2,
        maxrss_kib: 3,
        stdout,
        stderr,
        stdout_truncated: true,
        stderr_truncated: false,
    }
}

fn from_agent_samples() -> Vec<FromAgent> {
    vec![
        FromAgent::Hello {
            version: 1,
            agent_pid: 1,
            buffered: vec![Buffered {
                pid: 9,
                stdout: 10,
                stderr: 0,
                stdout_dropped: 5,
                stderr_dropped: 0,
                exited: true,
            }],
        },
        FromAgent::Spawned { id: 1, pid: 2 },
        FromAgent::SpawnFailed { id: 1, errno: 2, message: "not found".into() },
        FromAgent::Exited(exited(2, None, None)),
        FromAgent::Exited(exited(3, Some(b"hi\n".to_vec()), Some(Vec::new()))),
        FromAgent::Exited(exited(4, Some(vec![b'x'; crate::MAX_DATA + 10]), Some(vec![b'y'; 3]))),
        FromAgent::Exited(exited(5, None, Some(b"only stderr".to_vec()))),
        FromAgent::Processes {
            id: 7,
            list: vec![ProcessInfo { pid: 2, argv: vec!["sleep".into(), "9".into()], pty: true, running: false }],
        },
        FromAgent::Pong { id: 8 },
        FromAgent::Dropped { pid: 2, stream: Stream::Stdout, bytes: 1 << 40 },
    ]
}

/// Encodes, then decodes both with the blocking reader and byte by byte.
fn round_trip<M: Message + PartialEq + std::fmt::Debug + Clone>(msgs: Vec<M>, data: Vec<DataFrame>) {
    let mut w = FrameWriter::new(Vec::new());
    let mut expected = Vec::new();
    for (i, m) in msgs.into_iter().enumerate() {
        w.send(&m).unwrap();
        expected.push(Incoming::Message(m));
        if let Some(d) = data.get(i) {
            w.send_data(d.pid, d.stream, &d.bytes).unwrap();
            expected.push(Incoming::Data(d.clone()));
        }
    }
    let wire = w.into_inner();

    let mut r = FrameReader::new(&wire[..]);
    let mut got = Vec::new();
    while let Some(item) = r.read::<M>().unwrap() {
        got.push(item);
    }
    assert_eq!(got, expected);

    for step in [1, 7, 4096] {
        let mut d = MessageDecoder::<M>::new();
        let mut got = Vec::new();
        for piece in wire.chunks(step) {
            d.push(piece);
            while let Some(item) = d.next_message().unwrap() {
                got.push(item);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, expected);
    }
}

#[test]
fn every_message_round_trips() {
    let stdin = |b: &[u8]| DataFrame { pid: 42, stream: Stream::Stdin, bytes: b.to_vec() };
    round_trip(to_agent_samples(), vec![stdin(b"abc"), stdin(&[0; 100_000])]);
    let out = |s, b: &[u8]| DataFrame { pid: 42, stream: s, bytes: b.to_vec() };
    round_trip(from_agent_samples(), vec![out(Stream::Stdout, b"x"), out(Stream::Stderr, b"\xff\xfe")]);
}

#[test]
fn clean_eof_and_truncation() {
    let mut r = FrameReader::new(&[][..]);
    assert!(r.read::<ToAgent>().unwrap().is_none());
    let mut wire = Vec::new();
    ToAgent::Ping { id: 1 }.encode(&mut wire).unwrap();
    for cut in 1..wire.len() {
        let mut r = FrameReader::new(&wire[..cut]);
        assert!(matches!(r.read::<ToAgent>(), Err(Error::Decode(DecodeError::Truncated(_)))), "cut at {cut}");
    }
    // A capture without its exit.
    let mut capture_only = Vec::new();
    encode_chunks(Kind::Capture, 1, Stream::Stdout, b"x", &mut capture_only);
    let capture_only = &capture_only[..];
    let mut r = FrameReader::new(capture_only);
    assert!(matches!(r.read::<FromAgent>(), Err(Error::Decode(DecodeError::Truncated(0)))));
    let mut d = MessageDecoder::<FromAgent>::new();
    d.push(capture_only);
    assert!(d.next_message().unwrap().is_none());
    assert!(d.finish().is_err());
}

fn frames(list: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in list {
        f.encode(&mut out).unwrap();
    }
    out
}

fn decode_all<M: Message>(wire: &[u8]) -> Result<Vec<Incoming<M>>, DecodeError> {
    let mut d = MessageDecoder::<M>::new();
    d.push(wire);
    let mut got = Vec::new();
    while let Some(item) = d.next_message()? {
        got.push(item);
    }
    d.finish()?;
    Ok(got)
}

#[test]
fn out_of_place_frames_are_errors() {
    let cap = |pid, s| Frame::Capture(DataFrame { pid, stream: s, bytes: b"c".to_vec() });
    let data = |pid, s| Frame::Data(DataFrame { pid, stream: s, bytes: b"d".to_vec() });
    let json = |m: &FromAgent| Frame::Json(serde_json::to_vec(m).unwrap());
    let exit1 = json(&FromAgent::Exited(exited(1, Some(b"c".to_vec()), None)));
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("stdout data to the agent", frames(&[data(1, Stream::Stdout)])),
        ("capture to the agent", frames(&[cap(1, Stream::Stdout)])),
        ("json that is not a message", frames(&[Frame::Json(b"{\"type\":\"pong\"}".to_vec())])),
    ];
    for (what, wire) in bad {
        assert!(decode_all::<ToAgent>(&wire).is_err(), "{what}");
    }
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("stdin data from the agent", frames(&[data(1, Stream::Stdin)])),
        ("captured stdin", frames(&[cap(1, Stream::Stdin), exit1.clone()])),
        ("data inside a capture", frames(&[cap(1, Stream::Stdout), data(1, Stream::Stdout), exit1.clone()])),
        ("captures of two processes", frames(&[cap(1, Stream::Stdout), cap(2, Stream::Stdout), exit1.clone()])),
        ("capture then another message", frames(&[cap(1, Stream::Stdout), json(&FromAgent::Pong { id: 1 })])),
        ("capture then the exit of another", frames(&[cap(2, Stream::Stdout), exit1.clone()])),
        (
            "capture for an uncaptured exit",
            frames(&[cap(1, Stream::Stdout), json(&FromAgent::Exited(exited(1, None, None)))]),
        ),
        ("declared length differs", frames(&[cap(1, Stream::Stdout), cap(1, Stream::Stdout), exit1.clone()])),
        ("declared but missing", frames(&[json(&FromAgent::Exited(exited(1, Some(b"abc".to_vec()), None)))])),
    ];
    for (what, wire) in bad {
        assert!(decode_all::<FromAgent>(&wire).is_err(), "{what}");
    }
    // And the good order decodes.
    let good = decode_all::<FromAgent>(&frames(&[cap(1, Stream::Stdout), exit1])).unwrap();
    assert!(matches!(&good[..], [Incoming::Message(FromAgent::Exited(e))] if e.stdout.as_deref() == Some(&b"c"[..])));
}

#[test]
fn capture_limit_is_enforced_both_ways() {
    let mut out = Vec::new();
    let too_big = FromAgent::Exited(exited(1, Some(vec![0; CAPTURE_LIMIT + 1]), None));
    assert!(matches!(too_big.encode(&mut out), Err(EncodeError::CaptureTooLarge { .. })));
    assert!(out.is_empty());
    let mut wire = Vec::new();
    encode_chunks(Kind::Capture, 1, Stream::Stderr, &vec![0; CAPTURE_LIMIT + 1], &mut wire);
    let mut d = MessageDecoder::<FromAgent>::new();
    d.push(&wire);
    assert!(matches!(d.next_message(), Err(DecodeError::CaptureTooLarge { .. })));
    assert!(matches!(d.next_message(), Err(DecodeError::Poisoned)));
}

#[test]
fn oversized_messages_are_not_encoded() {
    let mut out = vec![1, 2, 3];
    let huge = ToAgent::Stdin { pid: 1, data: vec![0; MAX_FRAME] };
    assert!(matches!(huge.encode(&mut out), Err(EncodeError::TooLarge { .. })));
    assert_eq!(out, vec![1, 2, 3]);
}

/// xorshift64*: a tiny deterministic generator, enough for fuzzing the decoders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs both decoders over `wire`; they may fail but must not panic or hang.
fn decode_everything(wire: &[u8], rng: &mut Rng) {
    let _ = decode_all::<ToAgent>(wire);
    let _ = decode_all::<FromAgent>(wire);
    let mut r = FrameReader::new(wire);
    for _ in 0..wire.len() + 1 {
        match r.read::<FromAgent>() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    // In random pieces.
    let mut d = MessageDecoder::<ToAgent>::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        while let Ok(Some(_)) = d.next_message() {}
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5afe_4005e);
    for _ in 0..3000 {
        let len = rng.below(64);
        let mut wire: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Often make the length field plausible so bodies get parsed.
        if wire.len() >= 5 && rng.below(2) == 0 {
            let n = (wire.len() - 4) as u32;
            wire[..4].copy_from_slice(&n.to_le_bytes());
            wire[4] = 1 + rng.below(3) as u8;
        }
        decode_everything(&wire, &mut rng);
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = Rng(42);
    let mut valid = Vec::new();
    for m in to_agent_samples() {
        m.encode(&mut valid).unwrap();
    }
    for m in from_agent_samples().into_iter().filter(|m| !matches!(m, FromAgent::Exited(e) if e.pid == 4)) {
        m.encode(&mut valid).unwrap();
    }
    for _ in 0..2000 {
        let mut wire = valid.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 => {
                    let i = rng.below(wire.len());
                    wire[i] = rng.next() as u8;
                }
                1 => {
                    let i = rng.below(wire.len());
                    wire[i] ^= 1 << rng.below(8);
                }
                2 => wire.truncate(rng.below(wire.len() + 1)),
                _ => {
                    let i = rng.below(wire.len() + 1);
                    wire.insert(i, rng.next() as u8);
                }
            }
            if wire.is_empty() {
                break;
            }
        }
        decode_everything(&wire, &mut rng);
    }
}
