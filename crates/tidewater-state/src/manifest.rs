//! The manifest: the one file whose presence makes a checkpoint complete.

use serde::{Deserialize, Serialize};

/// Format version written into every manifest.
pub const VERSION: u32 = 1;

/// One state file of a checkpoint: the state of one operator of one subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Stage index (0 = the source stage).
    pub stage: usize,
    /// Subtask within the stage.
    pub subtask: usize,
    /// Operator index within the subtask's chain.
    pub operator: usize,
    /// The operator's name, for `checkpoints inspect`.
    pub operator_name: String,
    /// File name within the checkpoint.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// Rows of state.
    pub rows: u64,
    /// CRC-32 of the file.
    pub crc32: u32,
}

/// A complete checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`] at the time of writing.
    pub version: u32,
    /// The job's name.
    pub job: String,
    /// The checkpoint's epoch (1, 2, ...).
    pub epoch: u64,
    /// When the checkpoint was triggered, epoch milliseconds.
    pub started_ms: i64,
    /// From trigger to the manifest being written, milliseconds.
    pub duration_ms: u64,
    /// True for the checkpoint taken after every source ended: nothing is left to do.
    pub finished: bool,
    /// One line per stage describing its operators: a restore into a different plan is
    /// refused with the line that changed.
    pub plan: Vec<String>,
    /// Parallelism of each stage.
    pub parallelism: Vec<usize>,
    /// Position of each source subtask (connector-specific JSON).
    pub sources: Vec<serde_json::Value>,
    /// The state files.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Total bytes of state.
    pub fn state_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// A header line with the body's CRC-32 and length, then the JSON body.
    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut out = format!(
            "tidewater-manifest v{VERSION} crc32={:08x} bytes={}\n",
            crc32fast::hash(&body),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses a manifest, checking its header. The error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("no header line (truncated?)")?;
        let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
        let body = &bytes[nl + 1..];
        let mut crc = None;
        let mut len = None;
        for part in header.split(' ') {
            if let Some(v) = part.strip_prefix("crc32=") {
                crc = u32::from_str_radix(v, 16).ok();
            } else if let Some(v) = part.strip_prefix("bytes=") {
                len = v.parse::<usize>().ok();
            }
        }
        let (Some(crc), Some(len)) = (crc, len) else {
            return Err(format!("malformed header '{header}'"));
        };
        if body.len() != len {
            return Err(format!(
                "{} bytes of body, the header says {len} (truncated?)",
                body.len()
            ));
        }
        if crc32fast::hash(body) != crc {
            return Err("checksum mismatch (damaged)".into());
        }
        let m: Manifest = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
        if m.version != VERSION {
            return Err(format!(
                "format version {} (this build reads {VERSION})",
                m.version
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn sample(epoch: u64) -> Manifest {
        Manifest {
            version: VERSION,
            job: "j".into(),
            epoch,
            started_ms: 1,
            duration_ms: 2,
            finished: false,
            plan: vec!["a".into()],
            parallelism: vec![1],
            sources: vec![serde_json::json!({"offset": 3})],
            files: vec![],
        }
    }

    #[test]
    fn round_trip_truncation_and_damage() {
        let m = sample(7);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        let i = bytes.len() - 5;
        bad[i] = b'x';
        assert!(Manifest::decode(&bad).unwrap_err().contains("damaged"));
    }
}
