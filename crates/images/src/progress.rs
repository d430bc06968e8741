//! What long operations (pull, import, build) report as they go. The CLI draws progress
//! on stderr; the daemon turns the same events into its event stream.

use crate::digest::Digest;
use crate::store::ImageRecord;
use crate::unpack::Report;

#[derive(Debug)]
pub enum Event<'a> {
    /// The image is known: how many layers, how many already in the store, and the bytes
    /// left to download.
    Resolved {
        name: &'a str,
        digest: &'a Digest,
        layers: usize,
        present: usize,
        download: u64,
    },
    /// Bytes of a layer downloaded so far.
    Download {
        layer: &'a Digest,
        done: u64,
        total: u64,
    },
    /// A download continues an earlier, interrupted one.
    Resumed {
        layer: &'a Digest,
        offset: u64,
    },
    /// A transfer failed and is tried again.
    Retrying {
        layer: &'a Digest,
        attempt: u32,
        reason: &'a str,
    },
    /// A layer is unpacked (and what was neutralised in it).
    Unpacked {
        layer: &'a Digest,
        report: &'a Report,
    },
    /// A free-form line (import and build steps).
    Note {
        text: &'a str,
    },
    Done {
        record: &'a ImageRecord,
    },
}

pub trait Progress: Send + Sync {
    fn event(&self, e: Event<'_>);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}
