//! Usage events, the metering rules that turn an invocation into billed quantities, and the
//! hourly buckets that hold them.

mod event;
pub mod retention;
pub mod rollup;
mod rules;
pub mod store;
pub mod usage;

pub use event::{TenantId, UsageEvent};
pub use rules::MeteringRules;
pub use store::{MeterStore, RecordOutcome};
