//! The gateway's own answers: denials and errors as `text/plain` bodies an agent can read.

use crate::approve::Refusal;
use crate::target::TargetError;

/// One response the gateway writes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
    /// `x-safehouse-denied`: the rule that denied.
    pub denied_by: Option<String>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl Reply {
    pub fn text(status: u16, body: String) -> Reply {
        Reply { status, body, denied_by: None }
    }

    /// The bytes of the response; `close` adds `Connection: close`.
    pub fn encode(&self, close: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if let Some(rule) = &self.denied_by {
            // A header value holds visible ASCII, spaces and tabs only.
            let printable = rule.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
            out.push_str("x-safehouse-denied: ");
            out.push_str(if printable { rule } else { "unprintable rule" });
            out.push_str("\r\n");
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

pub(crate) fn bad_request(what: &str, e: &dyn std::fmt::Display) -> Reply {
    Reply::text(400, format!("safehouse gateway: cannot serve {what}\n{e}\n"))
}

pub(crate) fn target_error(what: &str, e: &TargetError) -> Reply {
    bad_request(what, e)
}

/// The response for a refusal: 403 naming the rule, or 502 for resolution/connect failures.
pub(crate) fn refusal(what: &str, r: Refusal) -> Reply {
    match r {
        Refusal::Denied { rule, reason, hint } => Reply {
            status: 403,
            body: format!("safehouse gateway denied {what}\nrule: {rule}\nreason: {reason}\nhint: {hint}\n"),
            denied_by: Some(rule),
        },
        Refusal::Resolve(m) => {
            Reply::text(502, format!("safehouse gateway could not resolve the host of {what}\n{m}\n"))
        }
        Refusal::Connect(m) => {
            Reply::text(502, format!("safehouse gateway could not reach the upstream of {what}\n{m}\n"))
        }
    }
}

/// `METHOD target` for bodies, cut to a readable length.
pub(crate) fn request_line(method: &str, target: &str) -> String {
    let mut s = format!("{method} {target}");
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_name_the_rule_in_a_header_that_cannot_be_split() {
        let r = refusal(
            "GET http://x/",
            Refusal::Denied { rule: "default deny".into(), reason: "r".into(), hint: "h".into() },
        );
        let text = String::from_utf8(r.encode(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.contains("\r\nx-safehouse-denied: default deny\r\n"), "{text}");
        let r = Reply { denied_by: Some("a\r\nSet-Cookie: x".into()), ..Reply::text(403, String::new()) };
        let text = String::from_utf8(r.encode(true)).unwrap();
        assert!(text.contains("x-safehouse-denied: unprintable rule\r\nConnection: close\r\n\r\n"), "{text}");
    }
}
