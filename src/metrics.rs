//! Prometheus metrics. Each running app owns its registry, so tests in one process do not
//! see each other's counts.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::ingest::decode::ErrorCode;

pub struct Metrics {
    registry: Registry,
    pub events_accepted: IntCounter,
    pub events_duplicate: IntCounter,
    pub messages_dead_lettered: IntCounterVec,
    pub batch_events: Histogram,
    pub commit_seconds: Histogram,
    pub consumer_in_flight: IntGauge,
    pub consumer_connected: IntGauge,
    pub reconnects: IntCounter,
    pub invoices_finalized: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            events_accepted: IntCounter::new(
                "meterd_events_accepted_total",
                "Usage events counted for the first time",
            )
            .unwrap(),
            events_duplicate: IntCounter::new(
                "meterd_events_duplicate_total",
                "Usage events whose (tenant, id) was already counted",
            )
            .unwrap(),
            messages_dead_lettered: IntCounterVec::new(
                Opts::new(
                    "meterd_messages_dead_lettered_total",
                    "Messages sent to the dead-letter exchange, by error code",
                ),
                &["code"],
            )
            .unwrap(),
            batch_events: Histogram::with_opts(
                HistogramOpts::new("meterd_batch_events", "Events per committed batch").buckets(
                    vec![
                        1.0, 10.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 20000.0, 50000.0,
                    ],
                ),
            )
            .unwrap(),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "meterd_batch_commit_seconds",
                    "Time to record one batch in the database",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).unwrap()),
            )
            .unwrap(),
            consumer_in_flight: IntGauge::new(
                "meterd_consumer_in_flight_messages",
                "Deliveries received but not yet acknowledged",
            )
            .unwrap(),
            consumer_connected: IntGauge::new(
                "meterd_consumer_connected",
                "1 while the consumer holds a broker connection",
            )
            .unwrap(),
            reconnects: IntCounter::new(
                "meterd_consumer_reconnects_total",
                "Broker sessions that ended and were re-established",
            )
            .unwrap(),
            invoices_finalized: IntCounter::new(
                "meterd_invoices_finalized_total",
                "Invoices finalized",
            )
            .unwrap(),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "meterd_http_requests_total",
                    "HTTP requests by route and status",
                ),
                &["method", "route", "status"],
            )
            .unwrap(),
            http_seconds: HistogramVec::new(
                HistogramOpts::new("meterd_http_request_seconds", "HTTP request latency")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).unwrap()),
                &["method", "route"],
            )
            .unwrap(),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.events_accepted.clone()),
            Box::new(m.events_duplicate.clone()),
            Box::new(m.messages_dead_lettered.clone()),
            Box::new(m.batch_events.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.consumer_in_flight.clone()),
            Box::new(m.consumer_connected.clone()),
            Box::new(m.reconnects.clone()),
            Box::new(m.invoices_finalized.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_seconds.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        // Show every code from the start, so alerts can use rate() without absent series.
        for code in ErrorCode::ALL {
            m.messages_dead_lettered.with_label_values(&[code.as_str()]);
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding metrics into memory cannot fail");
        String::from_utf8(buf).expect("metrics text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
