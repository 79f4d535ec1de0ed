//! `dcap` evidence.
