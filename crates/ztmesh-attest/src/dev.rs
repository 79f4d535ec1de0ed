//! `dev` evidence.
