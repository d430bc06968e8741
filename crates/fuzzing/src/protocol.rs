//! The daemon ↔ agent protocol in both directions: the agent reads what the daemon sends
//! (`ToAgent`), the daemon reads what the agent — code inside the sandbox, if it took the
//! agent over — sends (`FromAgent`).

use safehouse_protocol::{encode_data, FromAgent, Incoming, Message, MessageDecoder, ToAgent};

/// `protocol_frames`: the first byte picks the direction (bit 0) and the size of the pieces
/// the stream arrives in (the rest); the other bytes are the stream. The decoder gives the
/// same items (and the same error) whatever the pieces, and every item encodes to bytes
/// that decode to the same item.
pub fn frames(data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else { return };
    let piece = (sel >> 1) as usize + 1;
    if sel & 1 == 0 {
        direction::<ToAgent>(stream, piece);
    } else {
        direction::<FromAgent>(stream, piece);
    }
}

/// What a decoder makes of `stream` pushed in pieces of `piece` bytes: the items, then the
/// error that stopped it or the end-of-stream check.
fn decode<M: Message>(stream: &[u8], piece: usize) -> (Vec<Incoming<M>>, Result<(), String>) {
    let mut d = MessageDecoder::<M>::new();
    let mut items = Vec::new();
    for chunk in stream.chunks(piece) {
        d.push(chunk);
        loop {
            match d.next_message() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Err(e.to_string())),
            }
        }
    }
    let end = d.finish().map_err(|e| e.to_string());
    (items, end)
}

fn direction<M: Message + PartialEq + std::fmt::Debug>(stream: &[u8], piece: usize) {
    let (whole, whole_end) = decode::<M>(stream, stream.len().max(1));
    let (pieces, pieces_end) = decode::<M>(stream, piece);
    assert_eq!(whole, pieces, "items depend on how the bytes arrive");
    assert_eq!(whole_end, pieces_end, "the outcome depends on how the bytes arrive");
    for item in whole {
        let mut out = Vec::new();
        match &item {
            Incoming::Message(m) => {
                if m.encode(&mut out).is_err() {
                    continue;
                }
            }
            Incoming::Data(d) => {
                encode_data(d.pid, d.stream, &d.bytes, &mut out);
                if d.bytes.is_empty() {
                    // Documented: empty bytes are no frame at all.
                    assert!(out.is_empty());
                    continue;
                }
            }
        }
        let (again, end) = decode::<M>(&out, out.len().max(1));
        assert_eq!(end, Ok(()), "{item:?} encoded does not decode cleanly");
        assert_eq!(again, vec![item], "an item encoded decodes to something else");
    }
}
