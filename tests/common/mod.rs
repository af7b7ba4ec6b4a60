//! The black-box test harness: each test gets a fresh database and its own exchange and
//! queue names, the real app on port 0, and clean-up even when it panics.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions},
    types::AMQPValue,
};
use meterd::app::{RunningApp, ServeRole};
use meterd::config::Settings;
use serde_json::Value;
use sqlx::{Connection as _, Executor as _};
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(30);

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        meterd::telemetry::init(meterd::config::LogFormat::Pretty, None);
    }
}

/// Settings for one test: unique database, exchange, queue and connection names.
pub fn test_settings() -> Settings {
    let mut s = Settings::load_from(None, &[]).expect("default settings load");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let base = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    s.database.url = format!("{base}/meterd_test_{tag}");
    s.database.max_connections = 8;
    s.amqp.exchange = format!("test.{tag}.usage");
    s.amqp.queue = format!("test.{tag}.events");
    s.amqp.dead_letter_exchange = format!("test.{tag}.dlx");
    s.amqp.dead_letter_queue = format!("test.{tag}.dead");
    s.amqp.connection_name = format!("meterd-test-{tag}");
    s.amqp.queue_expires_ms = Some(10 * 60 * 1000);
    s.amqp.batch_linger_ms = 5;
    s.http.addr = "127.0.0.1:0".to_owned();
    s.auth.admin_key = format!("admin-{tag}");
    // Tests put usage in past periods and finalize them when they choose.
    s.billing.auto_finalize = false;
    s
}

/// The same settings as environment variables, for a child `meterd` process.
pub fn settings_env(s: &Settings) -> Vec<(String, String)> {
    let m = &s.metering;
    let mut env = vec![
        ("METERD__DATABASE__URL", s.database.url.clone()),
        ("METERD__AMQP__EXCHANGE", s.amqp.exchange.clone()),
        ("METERD__AMQP__QUEUE", s.amqp.queue.clone()),
        (
            "METERD__AMQP__DEAD_LETTER_EXCHANGE",
            s.amqp.dead_letter_exchange.clone(),
        ),
        (
            "METERD__AMQP__DEAD_LETTER_QUEUE",
            s.amqp.dead_letter_queue.clone(),
        ),
        (
            "METERD__AMQP__CONNECTION_NAME",
            s.amqp.connection_name.clone(),
        ),
        (
            "METERD__AMQP__BATCH_LINGER_MS",
            s.amqp.batch_linger_ms.to_string(),
        ),
        ("METERD__AMQP__PREFETCH", s.amqp.prefetch.to_string()),
        (
            "METERD__AMQP__BATCH_MAX_MESSAGES",
            s.amqp.batch_max_messages.to_string(),
        ),
        ("METERD__HTTP__ADDR", s.http.addr.clone()),
        ("METERD__AUTH__ADMIN_KEY", s.auth.admin_key.clone()),
        (
            "METERD__METERING__DURATION_GRANULARITY_MS",
            m.duration_granularity_ms.to_string(),
        ),
        (
            "METERD__METERING__MIN_DURATION_MS",
            m.min_duration_ms.to_string(),
        ),
        (
            "METERD__METERING__MEMORY_GRANULARITY_MB",
            m.memory_granularity_mb.to_string(),
        ),
        (
            "METERD__METERING__MIN_MEMORY_MB",
            m.min_memory_mb.to_string(),
        ),
    ];
    if let Some(ms) = s.amqp.queue_expires_ms {
        env.push(("METERD__AMQP__QUEUE_EXPIRES_MS", ms.to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A running meterd plus what a test needs to talk to it.
pub struct TestApp {
    pub settings: Settings,
    pub base_url: String,
    pub http: reqwest::Client,
    pub pool: sqlx::PgPool,
    app: Option<RunningApp>,
    amqp: Connection,
    channel: Channel,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_role(settings, ServeRole::All).await
}

pub async fn spawn_app_role(settings: Settings, role: ServeRole) -> TestApp {
    init_logs();
    let app = meterd::app::start(settings.clone(), role, CancellationToken::new())
        .await
        .expect("meterd starts");
    let amqp = meterd::ingest::topology::connect(&settings.amqp, "meterd-test-publisher")
        .await
        .expect("connect to RabbitMQ");
    let channel = amqp.create_channel().await.expect("channel");
    meterd::ingest::topology::declare(&channel, &settings.amqp)
        .await
        .expect("declare topology");
    TestApp {
        base_url: format!("http://{}", app.addr),
        http: reqwest::Client::new(),
        pool: app.pool.clone(),
        app: Some(app),
        settings,
        amqp,
        channel,
    }
}

impl TestApp {
    pub fn admin_key(&self) -> &str {
        &self.settings.auth.admin_key
    }

    /// Publishes a raw body to the usage exchange, persistent, and waits for the broker.
    pub async fn publish(&self, body: &[u8]) {
        self.publish_bodies([body.to_vec()]).await
    }

    /// Publishes each value as its own message, waiting for the broker's confirms only at
    /// the end, so a backlog builds up fast.
    pub async fn publish_all(&self, bodies: &[Value]) {
        self.publish_bodies(bodies.iter().map(|b| serde_json::to_vec(b).unwrap()))
            .await
    }

    async fn publish_bodies(&self, bodies: impl IntoIterator<Item = Vec<u8>>) {
        self.channel.confirm_select(Default::default()).await.ok();
        let mut confirms = Vec::new();
        for body in bodies {
            let confirm = self
                .channel
                .basic_publish(
                    self.settings.amqp.exchange.as_str().into(),
                    "usage.test".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirm = confirm.await.expect("publish confirm");
            assert!(!confirm.is_nack(), "the broker refused a test message");
        }
    }

    pub async fn publish_json(&self, body: &Value) {
        self.publish(&serde_json::to_vec(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base_url));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        response(req.send().await.expect("GET")).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, key, body).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .json(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        response(req.send().await.expect("request")).await
    }

    /// Issues a key through the API.
    pub async fn issue_key(&self, role: &str, tenant: Option<&str>) -> String {
        let (status, body) = self
            .post(
                "/v1/api-keys",
                Some(self.admin_key()),
                &serde_json::json!({"role": role, "tenant": tenant}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    /// Total requests counted in the buckets.
    pub async fn counted_requests(&self) -> i64 {
        counted_requests(&self.pool).await
    }

    /// Polls until the buckets hold `expected` requests (fails past the deadline, or if
    /// more than expected ever show up).
    pub async fn wait_for_requests(&self, expected: i64) {
        wait_for_requests(&self.pool, expected).await
    }

    /// Takes `n` messages from the dead-letter queue, polling until they arrive.
    pub async fn dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        let deadline = Instant::now() + DEADLINE;
        let mut letters = Vec::new();
        while letters.len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} dead letters arrived",
                letters.len()
            );
            let got = self
                .channel
                .basic_get(
                    self.settings.amqp.dead_letter_queue.as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get");
            match got {
                Some(message) => {
                    let headers = message
                        .delivery
                        .properties
                        .headers()
                        .clone()
                        .unwrap_or_default();
                    let header = |name: &str| match headers.inner().get(name) {
                        Some(AMQPValue::LongString(s)) => s.to_string(),
                        other => panic!("header {name} missing or not a string: {other:?}"),
                    };
                    letters.push(DeadLetter {
                        code: header("x-meterd-error"),
                        reason: header("x-meterd-reason"),
                        body: message.delivery.data.clone(),
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        letters
    }

    /// Usage rows of a tenant as a map from (bucket_start, function, arch) to the three
    /// quantities, following cursors through every page.
    pub async fn usage(
        &self,
        tenant: &str,
        query: &str,
        key: &str,
    ) -> BTreeMap<(String, String, String), [String; 3]> {
        let mut rows = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tenants/{tenant}/usage?{query}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&path, Some(key)).await;
            assert_eq!(status, 200, "{body}");
            for row in body["data"].as_array().unwrap() {
                let s = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                let previous = rows.insert(
                    (s("bucket_start"), s("function"), s("arch")),
                    [s("requests"), s("compute"), s("duration")],
                );
                assert!(previous.is_none(), "a usage row came twice: {row}");
            }
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return rows,
            }
        }
    }

    pub fn metrics(&self) -> &meterd::metrics::Metrics {
        &self.app.as_ref().unwrap().metrics
    }

    /// Stops the in-process app (the database and queues stay until drop).
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// The billing period `n` months before the current one.
pub fn months_back(n: u32) -> chrono::NaiveDate {
    meterd::billing::period::period_start(chrono::Utc::now())
        .checked_sub_months(chrono::Months::new(n))
        .unwrap()
}

/// `YYYY-MM` of a period.
pub fn label(p: chrono::NaiveDate) -> String {
    meterd::billing::period::format_period(p)
}

/// A moment on `day` (at most the 28th) at `hour` of period `p`, never in the future.
pub fn inside(p: chrono::NaiveDate, day: u32, hour: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone};
    let t = chrono::Utc
        .with_ymd_and_hms(p.year(), p.month(), day.min(28), hour, 0, 0)
        .unwrap();
    t.min(chrono::Utc::now() - chrono::Duration::minutes(1))
}

impl TestApp {
    /// Records events through `POST /v1/events` as admin, in bodies of up to 5000.
    pub async fn ingest(&self, events: &[Value]) {
        for chunk in events.chunks(5000) {
            let (status, body) = self
                .post(
                    "/v1/events",
                    Some(self.admin_key()),
                    &Value::Array(chunk.to_vec()),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }

    /// `PUT` as admin, expecting 200 or 201.
    pub async fn put_admin(&self, path: &str, body: &Value) -> Value {
        let (status, body) = self
            .send(reqwest::Method::PUT, path, Some(self.admin_key()), body)
            .await;
        assert!(
            status == 200 || status == 201,
            "PUT {path}: {status} {body}"
        );
        body
    }

    /// Finalizes a period as admin, expecting 200; returns the outcome.
    pub async fn finalize(&self, p: chrono::NaiveDate) -> Value {
        let (status, body) = self
            .post(
                "/v1/billing/finalize",
                Some(self.admin_key()),
                &serde_json::json!({"period": label(p)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub struct DeadLetter {
    pub code: String,
    pub reason: String,
    pub body: Vec<u8>,
}

pub async fn counted_requests(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT coalesce(sum(requests), 0)::int8 FROM usage_hourly")
        .fetch_one(pool)
        .await
        .expect("count requests");
    n
}

pub async fn wait_for_requests(pool: &sqlx::PgPool, expected: i64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = counted_requests(pool).await;
        assert!(
            n <= expected,
            "counted {n} requests, more than the {expected} sent"
        );
        if n == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} requests counted in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn response(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // Stop the consumer first, or it would re-declare the queues we delete.
            app.cancel();
        }
        let settings = self.settings.clone();
        // Clean up on a separate runtime: this may run while the test's runtime unwinds.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cleanup(&settings));
        })
        .join()
        .ok();
    }
}

async fn delete_topology(settings: &Settings) -> anyhow::Result<()> {
    let conn = meterd::ingest::topology::connect(&settings.amqp, "meterd-test-cleanup").await?;
    let ch = conn.create_channel().await?;
    for q in [&settings.amqp.queue, &settings.amqp.dead_letter_queue] {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for x in [&settings.amqp.exchange, &settings.amqp.dead_letter_exchange] {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Drops the test's database and deletes its queues and exchanges.
pub async fn cleanup(settings: &Settings) {
    if let Err(e) = delete_topology(settings).await {
        eprintln!("test clean-up could not delete the queues: {e:#}");
    }
    let (base, name) = settings.database.url.rsplit_once('/').unwrap();
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let _ = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await;
    }
}
