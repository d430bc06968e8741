//! The messages of the driver protocol (one JSON object per line each way).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A request to the driver. Every request gets events carrying its id and then exactly one
/// `end` or `fail`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run code in `context`, or in the default context of `language` (python if none).
    Execute {
        code: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Seconds; the kernel is interrupted (state kept) when they run out.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<f64>,
    },
    Create {
        #[serde(skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    List,
    Restart {
        context: String,
    },
    Remove {
        context: String,
    },
    /// Interrupt a context's kernel, or the execution of an earlier request (`request`:
    /// its id) whose caller went away.
    Interrupt {
        #[serde(skip_serializing_if = "Option::is_none")]
        context: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Start the default context of `language` now (a warm pool's sandboxes).
    Warm {
        language: String,
    },
}

impl Request {
    /// The request as one line, newline included.
    pub fn line(&self, id: u64) -> Vec<u8> {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), id.into());
        }
        let mut out = serde_json::to_vec(&v).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A context as the driver describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
    /// `running` or `dead` (its kernel died: restart it).
    pub state: String,
    /// The context code runs in when a request names a language but no context.
    #[serde(default)]
    pub default: bool,
}

/// What the driver said about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Part of an execution's output, in the shape the `e2b-code-interpreter` SDK reads
    /// (`type` is `stdout`, `stderr`, `result`, `error` or `number_of_executions`); the
    /// object is forwarded to clients as it is.
    Output(Map<String, Value>),
    Context(ContextInfo),
    Contexts(Vec<ContextInfo>),
    End,
    Fail {
        code: String,
        message: String,
    },
}

impl Event {
    /// `type` of an output event.
    pub fn kind(&self) -> &str {
        match self {
            Event::Output(m) => m.get("type").and_then(Value::as_str).unwrap_or(""),
            Event::Context(_) => "context",
            Event::Contexts(_) => "contexts",
            Event::End => "end",
            Event::Fail { .. } => "fail",
        }
    }
}

/// A line from the driver, checked: `(id, event)`, `Ready`, or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Event(u64, Event),
    Ready {
        languages: Vec<String>,
    },
    /// A `fail` that names no request (the driver could not read a line we sent).
    Unaddressed(String),
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a str, String> {
    o.get(k).and_then(Value::as_str).ok_or_else(|| format!("{k} is not a string"))
}

/// Parses one line; an error says what was wrong with it (for the counters, never for
/// the sandbox's callers).
pub fn parse(line: &[u8]) -> Result<Line, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut o) = v else { return Err("not an object".into()) };
    let kind = str_field(&o, "type")?.to_string();
    let id = o.get("id").and_then(Value::as_u64);
    if kind == "ready" {
        let languages = o
            .get("languages")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        return Ok(Line::Ready { languages });
    }
    let Some(id) = id else {
        return match kind.as_str() {
            "fail" => Ok(Line::Unaddressed(str_field(&o, "message")?.to_string())),
            _ => Err(format!("a {kind} event without an id")),
        };
    };
    let event = match kind.as_str() {
        "stdout" | "stderr" => {
            str_field(&o, "text")?;
            o.remove("id");
            Event::Output(o)
        }
        "error" => {
            for k in ["name", "value", "traceback"] {
                str_field(&o, k)?;
            }
            o.remove("id");
            Event::Output(o)
        }
        "result" => {
            o.remove("id");
            Event::Output(o)
        }
        "number_of_executions" => {
            o.get("execution_count").and_then(Value::as_u64).ok_or("execution_count is not a count")?;
            o.remove("id");
            Event::Output(o)
        }
        "context" => Event::Context(
            serde_json::from_value(o.remove("context").unwrap_or(Value::Null)).map_err(|e| format!("context: {e}"))?,
        ),
        "contexts" => Event::Contexts(
            serde_json::from_value(o.remove("contexts").unwrap_or(Value::Null))
                .map_err(|e| format!("contexts: {e}"))?,
        ),
        "end" => Event::End,
        "fail" => {
            Event::Fail { code: str_field(&o, "code")?.to_string(), message: str_field(&o, "message")?.to_string() }
        }
        other => return Err(format!("unknown event type {other:?}")),
    };
    Ok(Line::Event(id, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn requests_are_one_line_with_their_id() {
        let r = Request::Execute {
            code: "1+1".into(),
            language: None,
            context: Some("c1".into()),
            env: BTreeMap::new(),
            timeout: Some(2.5),
        };
        let line = r.line(7);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v, json!({"op": "execute", "id": 7, "code": "1+1", "context": "c1", "timeout": 2.5}));
        let v: Value = serde_json::from_slice(&Request::List.line(1)).unwrap();
        assert_eq!(v, json!({"op": "list", "id": 1}));
    }

    #[test]
    fn output_events_are_forwarded_without_their_id() {
        let l = parse(br#"{"id":3,"type":"stdout","text":"hi\n","timestamp":1}"#).unwrap();
        let Line::Event(3, Event::Output(o)) = l else { panic!("{l:?}") };
        assert_eq!(Value::Object(o), json!({"type": "stdout", "text": "hi\n", "timestamp": 1}));
        let l = parse(br#"{"id":3,"type":"result","png":"AAA","is_main_result":false}"#).unwrap();
        assert!(matches!(l, Line::Event(3, Event::Output(_))));
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        for (line, why) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "not an object"),
            (br#"{"id":1}"#, "type is not a string"),
            (br#"{"id":1,"type":"stdout","text":5}"#, "text is not a string"),
            (br#"{"id":1,"type":"error","name":"E","value":"v"}"#, "traceback is not a string"),
            (br#"{"id":1,"type":"exec"}"#, "unknown event type"),
            (br#"{"type":"stdout","text":"x"}"#, "without an id"),
            (br#"{"id":-1,"type":"end"}"#, "without an id"),
            (br#"{"id":1,"type":"context","context":{"id":1}}"#, "context:"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(why), "{e} for {}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn contexts_and_ready() {
        let l = parse(br#"{"id":2,"type":"contexts","contexts":[{"id":"a","language":"python","cwd":"/w","state":"running","default":true}]}"#).unwrap();
        assert_eq!(
            l,
            Line::Event(
                2,
                Event::Contexts(vec![ContextInfo {
                    id: "a".into(),
                    language: "python".into(),
                    cwd: "/w".into(),
                    state: "running".into(),
                    default: true
                }])
            )
        );
        assert_eq!(
            parse(br#"{"type":"ready","protocol":1,"languages":["python","bash"]}"#).unwrap(),
            Line::Ready { languages: vec!["python".into(), "bash".into()] }
        );
    }
}
