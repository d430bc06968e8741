//! Progress of pulls and imports on stderr: one line redrawn in place on a terminal
//! (bytes, rate, layers left), plain lines otherwise; what the unpacker neutralised is
//! always said.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use safehouse_images::progress::{Event, Progress};

use super::human;

pub struct Bars {
    quiet: bool,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    start: Instant,
    last_draw: Option<Instant>,
    total: u64,
    done: HashMap<String, u64>,
    layers_left: usize,
    drawn: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars {
            quiet,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                start: Instant::now(),
                last_draw: None,
                total: 0,
                done: HashMap::new(),
                layers_left: 0,
                drawn: false,
            }),
        }
    }

    /// Ends the in-place line.
    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.drawn {
            eprintln!();
            s.drawn = false;
        }
    }

    fn line(&self, s: &mut State, text: &str) {
        if s.drawn {
            eprint!("\r\x1b[2K");
            s.drawn = false;
        }
        eprintln!("{text}");
    }

    fn draw(&self, s: &mut State) {
        let now = Instant::now();
        if s.last_draw.is_some_and(|t| now.duration_since(t).as_millis() < 100) {
            return;
        }
        s.last_draw = Some(now);
        let done: u64 = s.done.values().sum();
        let secs = now.duration_since(s.start).as_secs_f64().max(0.001);
        let width = 30usize;
        let filled = if s.total == 0 { width } else { ((done as f64 / s.total as f64) * width as f64) as usize };
        let bar: String = "#".repeat(filled.min(width)) + &".".repeat(width - filled.min(width));
        eprint!(
            "\r\x1b[2K[{bar}] {} / {}  {}/s  {} layer(s) left",
            human(done),
            human(s.total),
            human((done as f64 / secs) as u64),
            s.layers_left
        );
        let _ = std::io::stderr().flush();
        s.drawn = true;
    }
}

impl Progress for Bars {
    fn event(&self, e: Event<'_>) {
        if self.quiet {
            // Neutralised content is said even when quiet.
            if let Event::Unpacked { layer, report } = e {
                if let Some(n) = report.neutralised() {
                    eprintln!("safehouse: layer {}: {n}", layer.short());
                }
            }
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Resolved { name, digest, layers, present, download } => {
                s.total = download;
                s.layers_left = layers - present;
                self.line(
                    &mut s,
                    &format!(
                        "{name}: {digest}, {layers} layers ({present} already here), {} to download",
                        human(download)
                    ),
                );
            }
            Event::Download { layer, done, .. } => {
                s.done.insert(layer.to_string(), done);
                if self.tty {
                    self.draw(&mut s);
                }
            }
            Event::Resumed { layer, offset } => {
                s.done.insert(layer.to_string(), offset);
                self.line(&mut s, &format!("layer {}: resuming at {}", layer.short(), human(offset)));
            }
            Event::Retrying { layer, attempt, reason } => {
                self.line(&mut s, &format!("layer {}: retry {attempt}: {reason}", layer.short()));
            }
            Event::Unpacked { layer, report } => {
                s.layers_left = s.layers_left.saturating_sub(1);
                let mut text = format!("layer {}: {} files, {}", layer.short(), report.files, human(report.bytes));
                if let Some(n) = report.neutralised() {
                    text.push_str(&format!("; neutralised: {n}"));
                }
                self.line(&mut s, &text);
                if self.tty && s.layers_left > 0 {
                    self.draw(&mut s);
                }
            }
            Event::Note { text } => self.line(&mut s, text),
            Event::Done { record } => {
                let secs = s.start.elapsed().as_secs_f64();
                self.line(
                    &mut s,
                    &format!(
                        "stored {} ({}, {} layers) in {secs:.1} s",
                        record.name,
                        human(record.size),
                        record.layers.len()
                    ),
                );
            }
        }
    }
}
