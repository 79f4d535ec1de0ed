//! ztmesh-dtn.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
