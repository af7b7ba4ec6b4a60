//! meterd: pay-per-use metering and billing for serverless platforms.
//!
//! A usage record flows: `ingest` (AMQP or HTTP, decoded at the edge) → `metering` (exactly
//! once into hourly buckets) → `rating` (pure pricing) → `billing` (invoices) → `api` /
//! `export`.

pub mod api;
pub mod app;
pub mod bench;
pub mod billing;
pub mod config;
pub mod db;
pub mod export;
pub mod ingest;
pub mod keys;
pub mod loadgen;
pub mod metering;
pub mod metrics;
pub mod rating;
pub mod telemetry;
