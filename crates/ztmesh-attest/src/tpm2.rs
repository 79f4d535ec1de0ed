//! `tpm2` evidence.
