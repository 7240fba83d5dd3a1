//! `meta.json`, the metadata file of a spool entry: the schema consumers
//! read (README "The spool", popspool(8)). The decoder fills in the headers,
//! body, attachments, report and problems; this adds where the message came
//! from and why an entry is in `quarantine/`.

use serde::Serialize;

use crate::mime;

/// The `version` field: consumers check it before reading the rest.
pub const VERSION: u32 = 1;

/// A `meta.json` with a few headers and no attachments is about 1.2 KiB;
/// the buffer starts this big so it is not grown step by step.
const TYPICAL_BYTES: usize = 2048;

/// Everything `meta.json` says about one entry.
#[derive(Serialize)]
pub struct Meta<'a> {
    /// [`VERSION`].
    pub version: u32,
    /// The entry's ID, its directory name.
    pub id: &'a str,
    /// The account's name.
    pub account: &'a str,
    /// The message's UIDL, when the server has a valid one.
    pub uidl: Option<&'a str>,
    /// Bytes of `message.eml`.
    pub size: u64,
    /// `host:port`.
    pub server: &'a str,
    /// When it was downloaded, RFC 3339 UTC.
    pub retrieved_at: String,
    /// Headers, kind, body, attachments, report, problems.
    #[serde(flatten)]
    pub decoded: &'a mime::Decoded,
    /// S/MIME facts; `null` for a message without any S/MIME layer.
    pub smime: Option<&'a crate::smime::Facts>,
    /// Why the entry is in `quarantine/` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<&'a str>,
}

impl Meta<'_> {
    /// The file's bytes: pretty-printed JSON and a final newline.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut json = Vec::with_capacity(TYPICAL_BYTES);
        serde_json::to_writer_pretty(&mut json, self)?;
        json.push(b'\n');
        Ok(json)
    }
}
