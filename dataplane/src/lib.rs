//! RouteIQ data plane: a pingora gateway that serves the OpenAI and Anthropic APIs from an
//! in-memory snapshot.
#![forbid(unsafe_code)]

pub mod a2a;
pub mod access;
pub mod attached;
pub mod auth;
pub mod budgets;
pub mod clock;
pub mod context;
pub mod conversations;
pub mod cost;
pub mod egress;
pub mod error;
pub mod eventstream;
pub mod handlers;
pub mod holder;
pub mod jsonrpc;
pub mod keymap;
pub mod limits;
pub mod mcp;
pub mod multipart;
pub mod otel;
pub mod params;
pub mod per_key;
pub mod permission;
pub mod providers;
pub mod respond;
pub mod routing;
pub mod server;
pub mod skills;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod translate;
pub mod upstream;
pub mod usage;
