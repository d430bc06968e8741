//! The host side of one driver: request ids, the events of each request routed to its
//! caller, the readiness handshake, and what happens when the driver goes away.
//!
//! Transport-free: the owner writes the bytes `begin` returns to the driver's stdin and
//! feeds the driver's stdout to `feed`; tests drive it with byte strings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::lines::{LineSplitter, MAX_LINE};
use crate::protocol::{parse, Event, Line, Request};

/// Output one request may queue (stdout, stderr and results); past it the rest of its
/// output is dropped and one stderr line says so. Errors and the end still arrive.
pub const MAX_OUTPUT: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("the code interpreter in this sandbox stopped: {0}")]
    Closed(String),
    #[error("the code interpreter did not start within {0:?}: {1}")]
    NotReady(Duration, String),
}

struct Pending {
    tx: mpsc::UnboundedSender<Event>,
    bytes: usize,
    truncated: bool,
}

struct State {
    next: u64,
    pending: HashMap<u64, Pending>,
    splitter: LineSplitter,
    closed: Option<String>,
    bad_lines: u64,
    last_bad: Option<String>,
}

pub struct Session {
    state: Mutex<State>,
    ready: watch::Sender<Option<Vec<String>>>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                next: 1,
                pending: HashMap::new(),
                splitter: LineSplitter::new(MAX_LINE),
                closed: None,
                bad_lines: 0,
                last_bad: None,
            }),
            ready: watch::channel(None).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a request: its id, the line to write to the driver, and its events.
    pub fn begin(&self, req: &Request) -> Result<(u64, Vec<u8>, mpsc::UnboundedReceiver<Event>), SessionError> {
        let mut st = self.lock();
        if let Some(why) = &st.closed {
            return Err(SessionError::Closed(why.clone()));
        }
        let id = st.next;
        st.next += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        st.pending.insert(id, Pending { tx, bytes: 0, truncated: false });
        Ok((id, req.line(id), rx))
    }

    /// The caller of `id` went away: its later events are dropped.
    pub fn forget(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Requests still waiting for their end.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Lines refused so far (malformed, too long, or naming no live request), and the
    /// last reason.
    pub fn bad_lines(&self) -> (u64, Option<String>) {
        let st = self.lock();
        (st.bad_lines + st.splitter.dropped(), st.last_bad.clone())
    }

    /// The languages the driver offers, once it said it is ready.
    pub fn languages(&self) -> Option<Vec<String>> {
        self.ready.borrow().clone()
    }

    /// Waits for the driver's `ready` line.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Vec<String>, SessionError> {
        let mut rx = self.ready.subscribe();
        let wait = async {
            loop {
                if let Some(l) = rx.borrow_and_update().clone() {
                    return Ok(l);
                }
                if let Some(why) = &self.lock().closed {
                    return Err(SessionError::Closed(why.clone()));
                }
                if rx.changed().await.is_err() {
                    return Err(SessionError::Closed("the session was dropped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(SessionError::NotReady(timeout, "no ready line from the driver".into())),
        }
    }

    /// The driver's output.
    pub fn feed(&self, bytes: &[u8]) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut lines: Vec<(usize, Result<Line, String>)> = Vec::new();
        st.splitter.push(bytes, |l| lines.push((l.len(), parse(l))));
        for (len, line) in lines {
            match line {
                Ok(Line::Ready { languages }) => {
                    self.ready.send_replace(Some(languages));
                }
                Ok(Line::Unaddressed(m)) => {
                    st.bad_lines += 1;
                    st.last_bad = Some(format!("the driver refused a request line: {m}"));
                }
                Ok(Line::Event(id, event)) => {
                    let Some(p) = st.pending.get_mut(&id) else {
                        st.bad_lines += 1;
                        st.last_bad = Some(format!("an event for request {id}, which is not waiting"));
                        continue;
                    };
                    let last = matches!(event, Event::End | Event::Fail { .. });
                    let bulky = matches!(event.kind(), "stdout" | "stderr" | "result");
                    if bulky {
                        p.bytes += len;
                        if p.bytes > MAX_OUTPUT {
                            if !p.truncated {
                                p.truncated = true;
                                let note = format!(
                                    "[safehouse: this execution's output passed {} MiB; the rest was dropped]\n",
                                    MAX_OUTPUT >> 20
                                );
                                let m = json!({"type": "stderr", "text": note, "timestamp": 0});
                                if let Value::Object(m) = m {
                                    let _ = p.tx.send(Event::Output(m));
                                }
                            }
                            continue;
                        }
                    }
                    let _ = p.tx.send(event);
                    if last {
                        st.pending.remove(&id);
                    }
                }
                Err(why) => {
                    st.bad_lines += 1;
                    st.last_bad = Some(why);
                }
            }
        }
    }

    /// The driver is gone: every waiting request fails with `why`, and so does every new one.
    pub fn close(&self, why: &str) {
        let mut st = self.lock();
        st.closed.get_or_insert_with(|| why.to_string());
        for (_, p) in st.pending.drain() {
            let _ = p.tx.send(Event::Fail { code: "closed".into(), message: why.to_string() });
        }
        drop(st);
        // Wake `wait_ready` callers so they see the close.
        self.ready.send_modify(|_| {});
    }

    pub fn closed(&self) -> Option<String> {
        self.lock().closed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    #[test]
    fn events_reach_their_own_request_only() {
        let s = Session::new();
        let (a, line, mut ra) = s.begin(&Request::List).unwrap();
        assert!(line.ends_with(b"\n"));
        let (b, _, mut rb) = s.begin(&Request::List).unwrap();
        let feed = format!(
            "{{\"id\":{b},\"type\":\"stdout\",\"text\":\"B\"}}\n{{\"id\":{a},\"type\":\"end\"}}\n{{\"id\":99,\"type\":\"end\"}}\n"
        );
        // Split mid-line: the splitter joins it.
        let (x, y) = feed.as_bytes().split_at(10);
        s.feed(x);
        s.feed(y);
        assert_eq!(drain(&mut ra), vec![Event::End]);
        let got = drain(&mut rb);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind(), "stdout");
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.bad_lines().0, 1, "the event for an unknown request is counted");
    }

    #[test]
    fn close_fails_what_waits_and_what_comes() {
        let s = Session::new();
        let (_, _, mut r) = s.begin(&Request::List).unwrap();
        s.close("the driver exited with status 1");
        assert_eq!(
            drain(&mut r),
            vec![Event::Fail { code: "closed".into(), message: "the driver exited with status 1".into() }]
        );
        assert_eq!(
            s.begin(&Request::List).unwrap_err(),
            SessionError::Closed("the driver exited with status 1".into())
        );
    }

    #[test]
    fn output_past_the_cap_is_dropped_with_one_note() {
        let s = Session::new();
        let (id, _, mut r) = s.begin(&Request::List).unwrap();
        let text = "x".repeat(1 << 20);
        let line = format!("{{\"id\":{id},\"type\":\"stdout\",\"text\":\"{text}\"}}\n");
        for _ in 0..(MAX_OUTPUT >> 20) + 3 {
            s.feed(line.as_bytes());
        }
        s.feed(format!("{{\"id\":{id},\"type\":\"error\",\"name\":\"E\",\"value\":\"v\",\"traceback\":\"\"}}\n{{\"id\":{id},\"type\":\"end\"}}\n").as_bytes());
        let got = drain(&mut r);
        let kinds: Vec<&str> = got.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "stdout").count(), (MAX_OUTPUT >> 20) - 1);
        assert_eq!(kinds[kinds.len() - 3..], ["stderr", "error", "end"]);
    }

    #[tokio::test]
    async fn ready_and_a_close_before_it() {
        let s = Session::new();
        s.feed(b"{\"type\":\"ready\",\"languages\":[\"python\"]}\n");
        assert_eq!(s.wait_ready(Duration::from_secs(1)).await.unwrap(), vec!["python".to_string()]);
        let s = Session::new();
        s.close("python3 is not installed in this sandbox");
        assert!(matches!(s.wait_ready(Duration::from_secs(1)).await, Err(SessionError::Closed(_))));
        let s = Session::new();
        assert!(matches!(s.wait_ready(Duration::from_millis(20)).await, Err(SessionError::NotReady(..))));
    }
}
