//! RouteIQ control plane.
#![forbid(unsafe_code)]
