//! The size limit that signed notes and the checkpoints they carry share.
//!
//! It lives apart from [`crate::note`] so that [`crate::checkpoint`] can bound a checkpoint's
//! text without importing the note module, which itself names checkpoint errors: dependencies
//! between the two then point one way (note → checkpoint → limits). This module holds constants
//! only and must never import another module of the crate.

/// Largest note accepted or produced, in bytes. A checkpoint is a note's text, so it is bounded
/// by the same number.
pub const MAX_NOTE_LEN: usize = 1 << 20;
