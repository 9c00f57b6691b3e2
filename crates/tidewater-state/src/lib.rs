//! # tidewater-state — checkpoints at rest
//!
//! Layout:
//! - [`store`]: the [`CheckpointStore`] trait — where checkpoint files and manifests
//!   live — with a local-directory implementation ([`LocalStore`]: write, fsync, rename,
//!   fsync the directory) and an in-memory one for tests ([`MemoryStore`]).
//! - [`encode`]: operator state as Arrow IPC streams with a CRC-32 per file.
//! - [`manifest`]: what a complete checkpoint is — its files, their checksums, the
//!   source positions, the plan it belongs to — and its checksummed encoding.
//! - [`protocol`]: the decisions, as pure functions over data: which epoch is complete,
//!   what to commit, what to restore, what to delete. The runtime's coordinator performs
//!   the I/O they ask for.
//! - [`recovery`]: reading checkpoints back — listing the store, loading one
//!   checkpoint's state with every file verified.
//!
//! Invariant (I): a checkpoint exists exactly when its manifest is durable, and a
//! manifest is written only after every file it names is durable.

pub mod encode;
pub mod manifest;
pub mod protocol;
pub mod recovery;
pub mod store;

pub use manifest::{FileEntry, Manifest};
pub use protocol::{Ack, Coordinator, Step, TaskId};
pub use store::{CheckpointStore, LocalStore, MemoryStore};
