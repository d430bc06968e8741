//! The Dockerfile, parsed by the `parse-dockerfile` crate, turned into the steps the
//! builder runs: each with its line number (for messages and logs), variables expanded
//! where Docker expands them, and instructions the builder does not support refused by
//! name.

use std::collections::BTreeMap;

use parse_dockerfile::{Command, Instruction, Source};

/// One instruction, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `FROM IMAGE` (variables expanded with the ARGs before it); `scratch` is empty.
    From {
        image: String,
    },
    /// Shell form: `/bin/sh -c TEXT`; exec form: the array.
    Run {
        argv: Vec<String>,
    },
    /// `COPY`/`ADD` of files of the context.
    Copy {
        sources: Vec<String>,
        dest: String,
        chown: Option<String>,
        add: bool,
    },
    Env {
        pairs: Vec<(String, String)>,
    },
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir {
        path: String,
    },
    User {
        user: String,
    },
    Label {
        pairs: Vec<(String, String)>,
    },
    Cmd {
        argv: Vec<String>,
    },
    Entrypoint {
        argv: Vec<String>,
    },
    /// EXPOSE, STOPSIGNAL, MAINTAINER: recorded in the config, no effect on the files.
    Meta {
        key: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line of the Dockerfile.
    pub line: usize,
    /// The instruction as written (first line, for messages).
    pub text: String,
    pub step: Step,
}

/// A Dockerfile error: the line and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn first_line(text: &str, span: &std::ops::Range<usize>) -> String {
    let s = &text[span.start.min(text.len())..span.end.min(text.len())];
    let first = s.lines().next().unwrap_or("").trim_end_matches('\\').trim();
    if s.lines().nth(1).is_some() {
        format!("{first} ...")
    } else {
        first.to_string()
    }
}

/// Removes line continuations (`\` + newline) of a shell-form command, as Docker does.
fn join_continuations(s: &str, escape: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == escape {
            // escape, optional spaces, newline
            let mut look = chars.clone();
            while matches!(look.peek(), Some(' ') | Some('\t') | Some('\r')) {
                look.next();
            }
            if look.peek() == Some(&'\n') {
                look.next();
                chars = look;
                continue;
            }
        }
        out.push(c);
    }
    // Comment lines inside a continued command are dropped by Docker.
    out.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n")
}

fn argv_of(cmd: &Command<'_>, escape: char) -> Vec<String> {
    match cmd {
        Command::Exec(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
        Command::Shell(s) => {
            vec!["/bin/sh".into(), "-c".into(), join_continuations(s.value, escape).trim().to_string()]
        }
        _ => Vec::new(),
    }
}

/// Splits `K=V K2="v 2"` (or the legacy `K V`, when `legacy`) into pairs; quotes and
/// backslashes as in a shell word.
pub fn pairs(text: &str, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let text = text.trim();
    let first = text.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let (k, v) =
            text.split_once(char::is_whitespace).ok_or_else(|| format!("{text:?} has no value; write KEY=VALUE"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for word in words(text)? {
        let (k, v) = word.split_once('=').ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("{word:?} has an empty name"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Shell-like words: whitespace splits, quotes group, backslash escapes.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in {text:?}"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-word}` and `${VAR:+word}` (an unset variable is
/// empty), `\$` is a literal `$`.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\\' && i + 1 < b.len() && b[i + 1] == '$' {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' || i + 1 >= b.len() {
            out.push(c);
            i += 1;
            continue;
        }
        if b[i + 1] == '{' {
            let end = b[i + 2..].iter().position(|c| *c == '}').ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            let inner: String = b[i + 2..i + 2 + end].iter().collect();
            let (name, op, word) = match inner.find(":-").or_else(|| inner.find(":+")) {
                Some(p) => (&inner[..p], &inner[p..p + 2], &inner[p + 2..]),
                None => (inner.as_str(), "", ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{inner}}} in {s:?}: write ${{NAME}}, ${{NAME:-default}} or ${{NAME:+value}}"));
            }
            let val = vars.get(name).filter(|v| !v.is_empty());
            match op {
                ":-" => out.push_str(val.map(String::as_str).unwrap_or(word)),
                ":+" => out.push_str(if val.is_some() { word } else { "" }),
                _ => out.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
            }
            i += 3 + end;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
            j += 1;
        }
        if j == start {
            out.push('$');
            i += 1;
            continue;
        }
        let name: String = b[start..j].iter().collect();
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        i = j;
    }
    Ok(out)
}

fn flag_value<'a>(flags: &'a [parse_dockerfile::Flag<'a>], name: &str) -> Option<&'a str> {
    flags.iter().find(|f| f.name.value == name).and_then(|f| f.value.as_ref().map(|v| v.value.as_ref()))
}

fn refuse_flags(flags: &[parse_dockerfile::Flag<'_>], allowed: &[&str], what: &str) -> Result<(), String> {
    for f in flags {
        if !allowed.contains(&f.name.value.as_ref()) {
            return Err(format!("{what} --{} is not supported; remove it", f.name.value));
        }
    }
    Ok(())
}

/// Parses `text` into steps. Multi-stage builds, heredocs, ONBUILD, HEALTHCHECK, SHELL,
/// VOLUME, RUN --mount/--network and remote ADD are refused with the line.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let df = parse_dockerfile::parse(text).map_err(|e| ParseError { line: e.line(), reason: e.to_string() })?;
    let escape = df.parser_directives.escape.as_ref().map(|d| d.value.value).unwrap_or('\\');
    let mut out = Vec::new();
    let mut froms = 0;
    for ins in &df.instructions {
        let (span, step) = match convert(ins, escape) {
            Ok(x) => x,
            Err((span, reason)) => return Err(ParseError { line: line_of(text, span.start), reason }),
        };
        if matches!(step, Step::From { .. }) {
            froms += 1;
            if froms > 1 {
                return Err(ParseError {
                    line: line_of(text, span.start),
                    reason: "a second FROM: multi-stage builds are not supported; build each stage as its own template"
                        .into(),
                });
            }
        } else if froms == 0 && !matches!(step, Step::Arg { .. }) {
            return Err(ParseError {
                line: line_of(text, span.start),
                reason: "the first instruction must be FROM (or ARG)".into(),
            });
        }
        out.push(Line { line: line_of(text, span.start), text: first_line(text, &span), step });
    }
    if froms == 0 {
        return Err(ParseError { line: 1, reason: "no FROM instruction".into() });
    }
    Ok(out)
}

type Conv = Result<(std::ops::Range<usize>, Step), (std::ops::Range<usize>, String)>;

fn convert(ins: &Instruction<'_>, escape: char) -> Conv {
    use Instruction as I;
    let unsupported =
        |span: std::ops::Range<usize>, what: &str, why: &str| Err((span, format!("{what} is not supported ({why})")));
    match ins {
        I::From(f) => {
            let span = f.from.span.start..f.image.span.end;
            if f.options.iter().any(|o| o.name.value != "platform") {
                return Err((span, "FROM takes only --platform here".into()));
            }
            Ok((span, Step::From { image: f.image.value.to_string() }))
        }
        I::Run(r) => {
            let span = r.run.span.start..r.arguments_span_end();
            refuse_flags(&r.options, &[], "RUN").map_err(|e| (span.clone(), e))?;
            if !r.here_docs.is_empty() {
                return unsupported(span, "RUN with a here-document", "write the script to a file and COPY it");
            }
            Ok((span, Step::Run { argv: argv_of(&r.arguments, escape) }))
        }
        I::Copy(c) => {
            let span = c.copy.span.start..c.dest.span.end;
            refuse_flags(&c.options, &["chown"], "COPY").map_err(|e| (span.clone(), e))?;
            let sources = sources(&c.src).map_err(|e| (span.clone(), e))?;
            Ok((
                span,
                Step::Copy {
                    sources,
                    dest: c.dest.value.to_string(),
                    chown: flag_value(&c.options, "chown").map(String::from),
                    add: false,
                },
            ))
        }
        I::Add(c) => {
            let span = c.add.span.start..c.dest.span.end;
            refuse_flags(&c.options, &["chown"], "ADD").map_err(|e| (span.clone(), e))?;
            let sources = sources(&c.src).map_err(|e| (span.clone(), e))?;
            if let Some(u) = sources.iter().find(|s| s.contains("://") || s.starts_with("git@")) {
                return Err((span, format!("ADD {u}: remote sources are not supported (a build reaches only the package registries); download in a RUN step")));
            }
            Ok((
                span,
                Step::Copy {
                    sources,
                    dest: c.dest.value.to_string(),
                    chown: flag_value(&c.options, "chown").map(String::from),
                    add: true,
                },
            ))
        }
        I::Env(e) => {
            let span = e.env.span.start..e.arguments.span.end;
            let p = pairs(&e.arguments.value, true).map_err(|r| (span.clone(), format!("ENV {r}")))?;
            Ok((span, Step::Env { pairs: p }))
        }
        I::Arg(a) => {
            let span = a.arg.span.start..a.arguments.span.end;
            let t = a.arguments.value.trim();
            let (name, default) = match t.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(words(d).map_err(|r| (span.clone(), r))?.join(" "))),
                None => (t.to_string(), None),
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err((span, format!("ARG {t:?}: write ARG NAME or ARG NAME=default (one per line)")));
            }
            Ok((span, Step::Arg { name, default }))
        }
        I::Workdir(w) => Ok((
            w.workdir.span.start..w.arguments.span.end,
            Step::Workdir { path: w.arguments.value.trim().to_string() },
        )),
        I::User(u) => {
            Ok((u.user.span.start..u.arguments.span.end, Step::User { user: u.arguments.value.trim().to_string() }))
        }
        I::Label(l) => {
            let span = l.label.span.start..l.arguments.span.end;
            let p = pairs(&l.arguments.value, false).map_err(|r| (span.clone(), format!("LABEL {r}")))?;
            Ok((span, Step::Label { pairs: p }))
        }
        I::Cmd(c) => Ok((
            c.cmd.span.start..command_end(&c.arguments, c.cmd.span.end),
            Step::Cmd { argv: argv_of(&c.arguments, escape) },
        )),
        I::Entrypoint(c) => Ok((
            c.entrypoint.span.start..command_end(&c.arguments, c.entrypoint.span.end),
            Step::Entrypoint { argv: argv_of(&c.arguments, escape) },
        )),
        I::Expose(e) => Ok((
            e.expose.span.clone(),
            Step::Meta {
                key: "expose".into(),
                value: e.arguments.iter().map(|a| a.value.to_string()).collect::<Vec<_>>().join(" "),
            },
        )),
        I::Stopsignal(s) => Ok((
            s.stopsignal.span.clone(),
            Step::Meta { key: "stopsignal".into(), value: s.arguments.value.to_string() },
        )),
        I::Maintainer(m) => {
            Ok((m.maintainer.span.clone(), Step::Meta { key: "maintainer".into(), value: m.name.value.to_string() }))
        }
        I::Healthcheck(h) => {
            unsupported(h.healthcheck.span.clone(), "HEALTHCHECK", "sandboxes have no health checks; remove it")
        }
        I::Onbuild(o) => unsupported(o.onbuild.span.clone(), "ONBUILD", "remove it"),
        I::Shell(s) => unsupported(
            s.shell.span.clone(),
            "SHELL",
            "RUN uses /bin/sh -c; write the exec form [\"bash\", \"-c\", \"...\"]",
        ),
        I::Volume(v) => unsupported(v.volume.span.clone(), "VOLUME", "a template has no volumes; remove it"),
        _ => Err((0..0, "an instruction this builder does not know".into())),
    }
}

fn sources(src: &[Source<'_>]) -> Result<Vec<String>, String> {
    src.iter()
        .map(|s| match s {
            Source::Path(p) => Ok(p.value.to_string()),
            _ => Err("here-document sources are not supported; put the content in a file of the context".to_string()),
        })
        .collect()
}

fn command_end(c: &Command<'_>, or: usize) -> usize {
    match c {
        Command::Exec(a) => a.span.end,
        Command::Shell(s) => s.span.end,
        _ => or,
    }
}

trait RunSpan {
    fn arguments_span_end(&self) -> usize;
}

impl RunSpan for parse_dockerfile::RunInstruction<'_> {
    fn arguments_span_end(&self) -> usize {
        command_end(&self.arguments, self.run.span.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_lines_and_refusals() {
        let df = "# syntax ignored\nARG BASE=deb\nFROM ${BASE}\nRUN apt-get update && \\\n    apt-get install -y cowsay\nENV A=1 B=\"two words\"\nENV LEGACY some value\nCOPY --chown=1000:1000 a b /dst/\nWORKDIR /app\nUSER app\nCMD [\"/bin/sh\", \"-c\", \"echo hi\"]\nEXPOSE 8080\n";
        let steps = parse(df).unwrap();
        assert_eq!(steps[0].step, Step::Arg { name: "BASE".into(), default: Some("deb".into()) });
        assert_eq!(steps[1].line, 3);
        assert_eq!(steps[2].line, 4);
        assert_eq!(
            steps[2].step,
            Step::Run {
                argv: vec!["/bin/sh".into(), "-c".into(), "apt-get update &&     apt-get install -y cowsay".into()]
            }
        );
        assert_eq!(steps[2].text, "RUN apt-get update && ...");
        assert_eq!(
            steps[3].step,
            Step::Env { pairs: vec![("A".into(), "1".into()), ("B".into(), "two words".into())] }
        );
        assert_eq!(steps[4].step, Step::Env { pairs: vec![("LEGACY".into(), "some value".into())] });
        assert_eq!(
            steps[5].step,
            Step::Copy {
                sources: vec!["a".into(), "b".into()],
                dest: "/dst/".into(),
                chown: Some("1000:1000".into()),
                add: false
            }
        );
        assert_eq!(steps[8].step, Step::Cmd { argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()] });

        let e = parse("FROM a\nRUN true\nFROM b\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("multi-stage"), "{}", e.reason);
        let e = parse("FROM a\n\nADD https://x.example/f /f\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("remote sources"), "{}", e.reason);
        assert!(parse("RUN true\n").unwrap_err().reason.contains("FROM"));
        assert!(parse("FROM a\nHEALTHCHECK CMD true\n").unwrap_err().reason.contains("HEALTHCHECK"));
        assert!(parse("FROM a\nRUN --mount=type=cache,target=/x true\n").unwrap_err().reason.contains("--mount"));
    }

    #[test]
    fn variables() {
        let vars: BTreeMap<String, String> =
            [("A".to_string(), "x".to_string()), ("E".to_string(), String::new())].into();
        assert_eq!(expand("$A/${A}/${B:-d}/${A:+set}/${E:-empty}/\\$A/$", &vars).unwrap(), "x/x/d/set/empty/$A/$");
        assert!(expand("${A", &vars).is_err());
    }
}
