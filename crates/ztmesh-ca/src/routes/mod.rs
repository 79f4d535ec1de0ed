//! The CA's routes, one module per concern. Each handler takes the shared
//! [`CaState`](crate::ca_state::CaState), passes the guards in [`crate::ca_state`] and answers
//! with an [`ApiError`](ztmesh_runtime::api_error::ApiError) on refusal; the router that names
//! them is in [`crate::ca_service`].

pub(crate) mod attest;
pub(crate) mod enroll;
pub(crate) mod log;
pub(crate) mod revoke;
pub(crate) mod rotate;
