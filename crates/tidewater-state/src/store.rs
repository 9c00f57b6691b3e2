//! Where checkpoints live. The protocol only needs these few operations, so the same
//! coordinator runs against a local directory and, in tests, against memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tidewater_core::{Error, Result};

/// Storage for checkpoint files and manifests, addressed by epoch.
pub trait CheckpointStore: Send + Sync + Debug {
    /// Writes a state file of checkpoint `epoch`; durable when this returns.
    fn put(&self, epoch: u64, name: &str, bytes: &[u8]) -> Result<()>;
    /// Reads a state file.
    fn get(&self, epoch: u64, name: &str) -> Result<Vec<u8>>;
    /// Writes the manifest of `epoch` atomically (all or nothing) and durably.
    fn put_manifest(&self, epoch: u64, bytes: &[u8]) -> Result<()>;
    /// The manifest of `epoch`, if one was written.
    fn get_manifest(&self, epoch: u64) -> Result<Option<Vec<u8>>>;
    /// Epochs that have anything stored (complete or not), ascending.
    fn epochs(&self) -> Result<Vec<u64>>;
    /// Removes everything of `epoch`.
    fn delete(&self, epoch: u64) -> Result<()>;
    /// Where it is, for logs and errors.
    fn location(&self) -> String;
}

const MANIFEST: &str = "_manifest";

/// Checkpoints in a local directory: `DIR/chk-<epoch>/<files>` and `DIR/chk-<epoch>/_manifest`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, created (with its parents) if missing. Fails at once when
    /// the directory cannot be created or written: a job must not run unprotected.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| Error::io("cannot create checkpoint directory", &root, e))?;
        let probe = root.join(".write-test");
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"ok"))
            .map_err(|e| Error::io("cannot write to checkpoint directory", &root, e))?;
        let _ = fs::remove_file(&probe);
        Ok(Self { root })
    }

    /// A store over an existing directory for reading only (`checkpoints list`): nothing
    /// is created or probed.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::config(
                format!("checkpoint directory '{}'", root.display()),
                "does not exist or is not a directory",
            ));
        }
        Ok(Self { root })
    }

    /// The directory of checkpoint `epoch`.
    pub fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.root.join(format!("chk-{epoch:010}"))
    }

    fn ensure_epoch_dir(&self, epoch: u64) -> Result<PathBuf> {
        let dir = self.epoch_dir(epoch);
        if !dir.exists() {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io("cannot create checkpoint directory", &dir, e))?;
            sync_dir(&self.root)?;
        }
        Ok(dir)
    }
}

/// fsync of a directory, so that a rename or a new entry in it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        File::create(path).map_err(|e| Error::io("cannot write checkpoint file", path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot write checkpoint file", path, e))
}

impl CheckpointStore for LocalStore {
    fn put(&self, epoch: u64, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.ensure_epoch_dir(epoch)?;
        write_synced(&dir.join(name), bytes)
    }

    fn get(&self, epoch: u64, name: &str) -> Result<Vec<u8>> {
        let path = self.epoch_dir(epoch).join(name);
        fs::read(&path).map_err(|e| Error::io("cannot read checkpoint file", path, e))
    }

    fn put_manifest(&self, epoch: u64, bytes: &[u8]) -> Result<()> {
        // Write-then-rename with fsyncs (I): a manifest is either whole or absent.
        let dir = self.ensure_epoch_dir(epoch)?;
        let tmp = dir.join("_manifest.tmp");
        write_synced(&tmp, bytes)?;
        let path = dir.join(MANIFEST);
        fs::rename(&tmp, &path).map_err(|e| Error::io("cannot write manifest", &path, e))?;
        sync_dir(&dir)
    }

    fn get_manifest(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        let path = self.epoch_dir(epoch).join(MANIFEST);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("cannot read manifest", path, e)),
        }
    }

    fn epochs(&self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io("cannot list checkpoints", &self.root, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(e) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(e);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn delete(&self, epoch: u64) -> Result<()> {
        let dir = self.epoch_dir(epoch);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot delete checkpoint", dir, e)),
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// Checkpoints in memory, for tests of the protocol.
#[derive(Debug, Default)]
pub struct MemoryStore {
    epochs: Mutex<BTreeMap<u64, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<u64, BTreeMap<String, Vec<u8>>>) -> T,
    ) -> Result<T> {
        let mut g = self
            .epochs
            .lock()
            .map_err(|_| Error::runtime("memory store poisoned"))?;
        Ok(f(&mut g))
    }

    /// Replaces a stored file's bytes (tests damage checkpoints with this).
    pub fn tamper(&self, epoch: u64, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        self.with(|m| {
            if let Some(b) = m.get_mut(&epoch).and_then(|e| e.get_mut(name)) {
                f(b);
            }
        })
    }
}

impl CheckpointStore for MemoryStore {
    fn put(&self, epoch: u64, name: &str, bytes: &[u8]) -> Result<()> {
        self.with(|m| {
            m.entry(epoch)
                .or_default()
                .insert(name.into(), bytes.to_vec());
        })
    }

    fn get(&self, epoch: u64, name: &str) -> Result<Vec<u8>> {
        self.with(|m| m.get(&epoch).and_then(|e| e.get(name)).cloned())?
            .ok_or_else(|| {
                Error::io(
                    "cannot read checkpoint file",
                    format!("memory/{epoch}/{name}"),
                    std::io::ErrorKind::NotFound.into(),
                )
            })
    }

    fn put_manifest(&self, epoch: u64, bytes: &[u8]) -> Result<()> {
        self.put(epoch, MANIFEST, bytes)
    }

    fn get_manifest(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.with(|m| m.get(&epoch).and_then(|e| e.get(MANIFEST)).cloned())
    }

    fn epochs(&self) -> Result<Vec<u64>> {
        self.with(|m| m.keys().copied().collect())
    }

    fn delete(&self, epoch: u64) -> Result<()> {
        self.with(|m| {
            m.remove(&epoch);
        })
    }

    fn location(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn exercise(s: &dyn CheckpointStore) {
        assert!(s.epochs().unwrap().is_empty());
        s.put(2, "a", b"xy").unwrap();
        s.put(1, "b", b"z").unwrap();
        assert_eq!(s.epochs().unwrap(), vec![1, 2]);
        assert_eq!(s.get(2, "a").unwrap(), b"xy");
        assert!(s.get_manifest(2).unwrap().is_none());
        s.put_manifest(2, b"m").unwrap();
        assert_eq!(s.get_manifest(2).unwrap().unwrap(), b"m");
        s.delete(1).unwrap();
        s.delete(1).unwrap();
        assert_eq!(s.epochs().unwrap(), vec![2]);
        assert!(s.get(1, "b").is_err());
    }

    #[test]
    fn memory_and_local_behave_alike() {
        exercise(&MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(dir.path().join("x/y")).unwrap();
        exercise(&local);
        // no temporary manifest is left behind
        assert!(!local.epoch_dir(2).join("_manifest.tmp").exists());
    }

    #[test]
    fn an_unwritable_directory_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = LocalStore::open(file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("checkpoint directory"), "{err}");
    }
}
