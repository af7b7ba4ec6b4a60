//! Billing: stored plans and tenants' plan assignments, drafts, finalization and invoices.

pub mod invoice;
pub mod period;
pub mod plans;
pub mod store;
