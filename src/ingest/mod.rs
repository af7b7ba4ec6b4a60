//! Getting usage in: message decoding, the AMQP topology and consumer, dead-lettering.
//! (HTTP ingest is `api::events`, which uses the same decoder and store.)

pub mod consumer;
pub mod dead_letters;
pub mod decode;
pub mod topology;

pub use consumer::run_consumer;
pub use decode::{ErrorCode, Rejection, decode_message};
