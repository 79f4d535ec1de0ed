//! ztmesh-trust.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
