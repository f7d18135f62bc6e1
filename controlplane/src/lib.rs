//! RouteIQ control plane: the only writer to PostgreSQL.
//!
//! Built so far: the schema (`migrations/`), the snapshot change log (`changes`), secrets
//! at rest (`crypto`), deployments, settings and keys as stored, the full snapshot built
//! from them (`snapshot`), and the LiteLLM config import (`import`). gRPC, NATS
//! distribution and usage ingestion are the next steps (see docs/architecture.md).
#![forbid(unsafe_code)]

pub mod changes;
pub mod crypto;
pub mod db;
pub mod deployments;
pub mod error;
pub mod import;
pub mod keys;
pub mod settings;
pub mod snapshot;
