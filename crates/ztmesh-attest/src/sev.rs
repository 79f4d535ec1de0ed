//! `sev` evidence.
