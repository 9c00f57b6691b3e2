//! Reading checkpoints back: list what the store holds and load one checkpoint's state
//! with every file verified. The choice of what to restore stays in [`crate::protocol`].

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use tidewater_core::{Error, Result};

use crate::encode::decode_batches;
use crate::manifest::Manifest;
use crate::protocol::Listing;
use crate::store::CheckpointStore;

/// Every epoch in the store with what its manifest says.
pub fn list(store: &dyn CheckpointStore) -> Result<BTreeMap<u64, Listing>> {
    let mut out = BTreeMap::new();
    for epoch in store.epochs()? {
        let listing = match store.get_manifest(epoch)? {
            None => Listing::Incomplete,
            Some(bytes) => match Manifest::decode(&bytes) {
                Ok(m) if m.epoch == epoch => Listing::Complete(Box::new(m)),
                Ok(m) => Listing::Damaged(format!("manifest names epoch {}", m.epoch)),
                Err(why) => Listing::Damaged(format!("manifest: {why}")),
            },
        };
        out.insert(epoch, listing);
    }
    Ok(out)
}

/// State of one operator of one subtask, as it was snapshotted.
pub type StateKey = (usize, usize, usize);

/// Loads every state file of `manifest`, verifying length and checksum. A file that
/// fails is reported as [`Error::Damaged`] naming it.
pub fn load(
    store: &dyn CheckpointStore,
    manifest: &Manifest,
) -> Result<BTreeMap<StateKey, Vec<RecordBatch>>> {
    let mut out = BTreeMap::new();
    for f in &manifest.files {
        // A missing file is damage; any other read error (permissions, a flaky disk)
        // says nothing about the checkpoint and stops the restore instead.
        let bytes = store.get(manifest.epoch, &f.name).map_err(|e| match e {
            Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::damaged(manifest.epoch, format!("state file {} is missing", f.name))
            }
            other => other,
        })?;
        let batches = decode_batches(&bytes, f.bytes, f.crc32).map_err(|why| {
            Error::damaged(manifest.epoch, format!("state file {}: {why}", f.name))
        })?;
        out.insert((f.stage, f.subtask, f.operator), batches);
    }
    Ok(out)
}
