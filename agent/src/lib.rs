//! kedge, the agent: the MQTT source, the ingest stage (plugins, routing, journal commit),
//! delivery to Kafka, operations (metrics, health, status) and the commands of the `kedge`
//! binary, built on the wire client (`kedge-wire`), the queue (`kedge-queue`) and the plugin
//! host (`kedge-plugin-host`). ARCHITECTURE.md §4 has the crate map.

pub mod audit;
pub mod backoff;
pub mod check;
pub mod config;
pub mod delivery;
mod dispatcher;
mod ingest;
pub mod ops;
pub mod pipeline;
pub mod reload;
pub mod route;
pub mod scaffold;
pub mod source;
pub mod telemetry;
mod tls;
