//! Reliability: usage stays exact when a consumer is killed, competes with another, loses its
//! broker connection, loses its database, or is shut down under load (SPEC §1.2, §1.3, §7).
//!
//! Where a scenario needs a process to die or to compete, the consumers are real `meterd`
//! processes; an API-only meterd in the test process then provides the database, the
//! topology, a publisher and the clean-up.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{DEADLINE, TestApp, counted_requests, spawn_app_role, spawn_app_with, test_settings};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use meterd::app::ServeRole;
use meterd::config::Settings;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgPool};
use tokio_util::sync::CancellationToken;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const FUNCTIONS: [&str; 4] = ["resize", "thumb", "api/get", "ünïcode λ"];

/// One invocation record, with durations in exact microseconds.
#[derive(Clone)]
struct Event {
    id: String,
    tenant: &'static str,
    function: &'static str,
    timestamp: DateTime<Utc>,
    duration_us: u64,
    init_us: u64,
    memory_mb: u32,
    arch: &'static str,
}

impl Event {
    fn json(&self) -> Value {
        let ms = |us: u64| -> Value {
            serde_json::from_str(&format!("{}.{:03}", us / 1000, us % 1000)).unwrap()
        };
        let mut v = json!({
            "id": self.id, "tenant": self.tenant, "function": self.function,
            "timestamp": self.timestamp.to_rfc3339(), "duration_ms": ms(self.duration_us),
            "memory_mb": self.memory_mb, "arch": self.arch,
        });
        if self.init_us > 0 {
            v["init_duration_ms"] = ms(self.init_us);
        }
        v
    }

    /// SPEC §2 under the default rules (1 ms granularity, no minimum), in integers.
    fn billed_ms(&self) -> i64 {
        (self.duration_us + self.init_us).div_ceil(1000) as i64
    }
}

/// (tenant, function) → (requests, billed_ms).
type Totals = BTreeMap<(String, String), (i64, i64)>;

/// Generates events and remembers the distinct ones, which are what must be counted.
struct Workload {
    rng: StdRng,
    now: DateTime<Utc>,
    distinct: Vec<Event>,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            now: Utc::now(),
            distinct: Vec::new(),
        }
    }

    fn fresh(&mut self) -> Event {
        let rng = &mut self.rng;
        let event = Event {
            id: format!("ev-{}", self.distinct.len()),
            tenant: TENANTS[rng.random_range(0..TENANTS.len())],
            function: FUNCTIONS[rng.random_range(0..FUNCTIONS.len())],
            timestamp: self.now - chrono::Duration::minutes(rng.random_range(0..3 * 24 * 60)),
            duration_us: rng.random_range(0..5_000_000),
            init_us: if rng.random_bool(0.2) {
                rng.random_range(1..900_000)
            } else {
                0
            },
            memory_mb: rng.random_range(1..=10_240),
            arch: ["x86_64", "arm64"][rng.random_range(0..2)],
        };
        self.distinct.push(event.clone());
        event
    }

    /// `n` events: fresh ones and, with probability `duplicates`, exact copies of earlier ones
    /// (a platform retrying a publish).
    fn stream(&mut self, n: usize, duplicates: f64) -> Vec<Event> {
        (0..n)
            .map(|_| {
                if !self.distinct.is_empty() && self.rng.random_bool(duplicates) {
                    self.distinct[self.rng.random_range(0..self.distinct.len())].clone()
                } else {
                    self.fresh()
                }
            })
            .collect()
    }

    /// Packs events into message bodies of 1 to `max` events; a lone event sometimes goes as
    /// a bare object.
    fn messages(&mut self, events: &[Event], max: usize) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        let mut rest = events;
        while !rest.is_empty() {
            let n = self.rng.random_range(1..=max).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let body = if n == 1 && self.rng.random_bool(0.5) {
                chunk[0].json()
            } else {
                Value::Array(chunk.iter().map(Event::json).collect())
            };
            bodies.push(serde_json::to_vec(&body).unwrap());
            rest = tail;
        }
        bodies
    }

    fn expected_count(&self) -> i64 {
        self.distinct.len() as i64
    }

    fn expected_totals(&self) -> Totals {
        let mut totals = Totals::new();
        for e in &self.distinct {
            let t = totals
                .entry((e.tenant.to_owned(), e.function.to_owned()))
                .or_default();
            t.0 += 1;
            t.1 += e.billed_ms();
        }
        totals
    }
}

/// Polls `check` until it yields a value; fails past the deadline.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_all(app: &TestApp, bodies: &[Vec<u8>]) {
    for body in bodies {
        app.publish(body).await;
    }
}

/// Publishes one more event and waits for exactly it. A single consumer takes the queue in
/// order and a redelivered message goes back to its place ahead of the marker, so once the
/// marker is counted nothing published before it is pending: the counts are final.
async fn settle(app: &TestApp, workload: &mut Workload) {
    let marker = workload.fresh();
    app.publish_json(&marker.json()).await;
    common::wait_for_requests(&app.pool, workload.expected_count()).await;
}

/// The buckets (hourly and, once every hour is rolled up, monthly) and the ledger hold exactly
/// the distinct events, each once.
async fn assert_totals(pool: &PgPool, workload: &Workload) {
    let expected = workload.expected_totals();
    meterd::metering::rollup::roll_up(pool, Utc::now() + chrono::Duration::days(2))
        .await
        .unwrap();
    for (table, query) in [
        (
            "usage_hourly",
            "SELECT tenant, function, sum(requests)::int8, sum(billed_ms)::int8
             FROM usage_hourly GROUP BY tenant, function",
        ),
        (
            "usage_monthly",
            "SELECT tenant, function, sum(requests)::int8, sum(billed_ms)::int8
             FROM usage_monthly GROUP BY tenant, function",
        ),
    ] {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as(query).fetch_all(pool).await.unwrap();
        let got: Totals = rows
            .into_iter()
            .map(|(tenant, function, requests, ms)| ((tenant, function), (requests, ms)))
            .collect();
        assert_eq!(got, expected, "{table}: (requests, billed_ms) per function");
    }
    let (ledger,): (i64,) = sqlx::query_as("SELECT count(*) FROM accepted_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(ledger, workload.expected_count(), "accepted-event ledger");
}

/// Ready messages and consumers of a queue, as the broker reports them.
async fn queue_state(settings: &Settings, queue: &str) -> (u32, u32) {
    let conn = meterd::ingest::topology::connect(&settings.amqp, "meterd-test-observer")
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue} exists: {e}"));
    let _ = conn.close(200, "bye".into()).await;
    (q.message_count(), q.consumer_count())
}

/// Runs `rabbitmqctl` (slow: about a second a call) and returns its standard output.
async fn rabbitmqctl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The broker's id of the connection a client opened under `name`.
async fn connection_pid(name: &str) -> String {
    let needle = format!("\"{name}\"");
    eventually(&format!("connection {name} to be listed"), async || {
        rabbitmqctl(&["list_connections", "pid", "client_properties", "-q"])
            .await
            .lines()
            .find(|line| line.contains(&needle))
            .and_then(|line| line.split('\t').next())
            .map(str::to_owned)
    })
    .await
}

/// A `meterd serve` child process on the test's settings, killed and reaped on drop (also
/// when the test fails). Its log (JSON, warnings and the start line) is echoed and kept.
struct Meterd {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Meterd {
    fn start(settings: &Settings, role: &str) -> Meterd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_meterd"));
        command.args(["serve", "--role", role]);
        // Nothing from this environment may point the child elsewhere than the test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("METERD") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .envs(common::settings_env(settings))
            .env("DATABASE_URL", &settings.database.url)
            .env("AMQP_URL", &settings.amqp.url)
            .env("METERD__HTTP__ADDR", "127.0.0.1:0")
            .env("METERD__LOG__FORMAT", "json")
            .env("RUST_LOG", "warn,meterd::app=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meterd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[meterd {pid}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Meterd { child, log }
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The HTTP address it bound, from its start line.
    async fn addr(&self) -> SocketAddr {
        eventually("meterd to start", async || {
            self.log.lock().unwrap().iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["fields"]["message"] == "meterd started")
                    .then(|| v["fields"]["addr"].as_str()?.parse().ok())?
            })
        })
        .await
    }

    /// A counter from its `/metrics`.
    async fn counter(&self, name: &str) -> u64 {
        let url = format!("http://{}/metrics", self.addr().await);
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in:\n{text}"))
    }

    /// SIGKILL: a crash at whatever point it has reached.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL meterd");
        self.child.wait().expect("reap meterd");
    }

    /// SIGTERM: a graceful stop.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for it to exit; fails if it takes longer than `within`.
    async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meterd did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Meterd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test database refusing new connections and its open ones ended, as an outage of that
/// database looks to meterd, while the shared server keeps serving the other tests. Ended
/// on drop if the test fails first.
struct DatabaseOutage {
    server_url: String,
    database: String,
    ended: bool,
}

impl DatabaseOutage {
    async fn begin(settings: &Settings) -> DatabaseOutage {
        let (base, database) = settings.database.url.rsplit_once('/').unwrap();
        let outage = DatabaseOutage {
            server_url: format!("{base}/postgres"),
            database: database.to_owned(),
            ended: false,
        };
        outage.allow_connections(false).await;
        let mut conn = sqlx::PgConnection::connect(&outage.server_url)
            .await
            .expect("connect to the postgres database");
        // A connection being set up while connections were switched off can still slip in:
        // end them until none is left.
        eventually("the test database's connections to end", async || {
            let (left,): (i64,) = sqlx::query_as(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&outage.database)
            .fetch_one(&mut conn)
            .await
            .expect("terminate backends");
            (left == 0).then_some(())
        })
        .await;
        outage
    }

    async fn end(mut self) {
        self.allow_connections(true).await;
        self.ended = true;
    }

    async fn allow_connections(&self, allow: bool) {
        let mut conn = sqlx::PgConnection::connect(&self.server_url)
            .await
            .expect("connect to the postgres database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allow}",
            self.database
        )))
        .execute(&mut conn)
        .await
        .expect("ALTER DATABASE … ALLOW_CONNECTIONS");
    }
}

impl Drop for DatabaseOutage {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let outage = DatabaseOutage {
            server_url: self.server_url.clone(),
            database: self.database.clone(),
            ended: true,
        };
        // This may run while the test's runtime unwinds: use a runtime of its own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(outage.allow_connections(true));
        })
        .join()
        .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let mut settings = test_settings();
    // Small batches, so the backlog takes many commits and a kill lands between them.
    settings.amqp.prefetch = 100;
    settings.amqp.batch_max_messages = 20;
    let app = spawn_app_role(settings.clone(), ServeRole::Api).await;
    let mut workload = Workload::new(1);
    let events = workload.stream(30_000, 0.1);
    let bodies = workload.messages(&events, 50);
    publish_all(&app, &bodies).await;
    let expected = workload.expected_count();

    // Kill one consumer early and the next one half-way.
    for threshold in [1, expected / 2] {
        let mut meterd = Meterd::start(&settings, "consumer");
        eventually(&format!("{threshold} events counted"), async || {
            let n = counted_requests(&app.pool).await;
            assert!(n <= expected, "counted {n} of {expected} events");
            (n >= threshold).then_some(())
        })
        .await;
        meterd.kill();
        let n = counted_requests(&app.pool).await;
        assert!(
            n < expected,
            "the consumer finished the backlog before it was killed"
        );
    }
    let _meterd = Meterd::start(&settings, "consumer");
    common::wait_for_requests(&app.pool, expected).await;
    settle(&app, &mut workload).await;
    assert_totals(&app.pool, &workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_racing_on_the_same_ids_stay_exact() {
    let mut settings = test_settings();
    // Little prefetch and small batches: both consumers get work and commit often.
    settings.amqp.prefetch = 20;
    settings.amqp.batch_max_messages = 5;
    let app = spawn_app_role(settings.clone(), ServeRole::Api).await;
    let mut consumers = [
        Meterd::start(&settings, "consumer"),
        Meterd::start(&settings, "consumer"),
    ];
    eventually("two consumers on the queue", async || {
        (queue_state(&settings, &settings.amqp.queue).await.1 == 2).then_some(())
    })
    .await;

    // Every event two or three times, the copies shuffled into different messages.
    let mut workload = Workload::new(2);
    let distinct = workload.stream(4_000, 0.0);
    let mut events: Vec<Event> = distinct
        .iter()
        .flat_map(|e| vec![e.clone(); 2 + usize::from(e.duration_us % 2 == 0)])
        .collect();
    events.shuffle(&mut workload.rng);
    let bodies = workload.messages(&events, 50);
    let (first, second) = bodies.split_at(bodies.len() / 2);
    tokio::join!(publish_all(&app, first), publish_all(&app, second));

    let expected = workload.expected_count();
    common::wait_for_requests(&app.pool, expected).await;
    // Every copy is accounted for once, as counted or as a duplicate, by one of the two.
    let accepted = eventually("the consumers to account for every copy", async || {
        let mut accepted = [0; 2];
        let mut duplicates = 0;
        for (n, consumer) in accepted.iter_mut().zip(&consumers) {
            *n = consumer.counter("meterd_events_accepted_total").await;
            duplicates += consumer.counter("meterd_events_duplicate_total").await;
        }
        let counted: u64 = accepted.iter().sum();
        assert!(counted <= expected as u64, "accepted {accepted:?}");
        assert!(counted + duplicates <= events.len() as u64);
        (counted == expected as u64 && counted + duplicates == events.len() as u64)
            .then_some(accepted)
    })
    .await;
    assert!(
        accepted.iter().all(|&n| n > 0),
        "both consumers must have counted events: {accepted:?}"
    );

    for consumer in &consumers {
        consumer.terminate();
    }
    for consumer in &mut consumers {
        let status = consumer.exit_status(Duration::from_secs(10)).await;
        assert!(status.success(), "{status}");
        assert!(
            !consumer.log_contains("deadlock"),
            "a transaction deadlocked"
        );
    }
    assert_eq!(
        queue_state(&settings, &settings.amqp.queue).await.0,
        0,
        "every message was acknowledged"
    );
    assert_totals(&app.pool, &workload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_is_re_established() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    let mut workload = Workload::new(3);
    let events = workload.stream(10_000, 0.15);
    let bodies = workload.messages(&events, 10);
    let pid = connection_pid(&settings.amqp.connection_name).await;

    // Close the consumer's connection while it is busy with the stream.
    let close = async {
        eventually("the first events counted", async || {
            (counted_requests(&app.pool).await > 0).then_some(())
        })
        .await;
        rabbitmqctl(&["close_connection", &pid, "test"]).await;
    };
    tokio::join!(publish_all(&app, &bodies), close);

    common::wait_for_requests(&app.pool, workload.expected_count()).await;
    settle(&app, &mut workload).await;
    assert_totals(&app.pool, &workload).await;
    assert!(
        app.metrics().reconnects.get() >= 1,
        "the consumer must have reconnected"
    );
    assert_ne!(
        connection_pid(&settings.amqp.connection_name).await,
        pid,
        "a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_delays_usage_but_never_dead_letters_it() {
    let mut settings = test_settings();
    let prefetch = 50;
    settings.amqp.prefetch = prefetch;
    let app = spawn_app_with(settings.clone()).await;
    let mut workload = Workload::new(4);
    // Before the outage the consumer holds open connections and knows the tenants.
    let before = workload.stream(300, 0.1);
    let bodies = workload.messages(&before, 20);
    publish_all(&app, &bodies).await;
    common::wait_for_requests(&app.pool, workload.expected_count()).await;
    // The counter is bumped after the commit the database shows, so wait for it too.
    let accepted_before = workload.expected_count() as u64;
    eventually(
        "the accepted-events counter to catch up with the commits",
        async || (app.metrics().events_accepted.get() == accepted_before).then_some(()),
    )
    .await;

    let outage = DatabaseOutage::begin(&settings).await;
    let during = workload.stream(2_000, 0.2);
    let bodies = workload.messages(&during, 20);
    let published = bodies.len();
    assert!(published > usize::from(prefetch));
    publish_all(&app, &bodies).await;
    // The consumer holds as many messages as its prefetch allows, unacknowledged; the
    // broker keeps the rest.
    let queue = settings.amqp.queue.as_str();
    eventually("the consumer to fill its prefetch", async || {
        let listing = rabbitmqctl(&[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "-q",
        ])
        .await;
        let row: Vec<usize> = listing
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&queue))?[1..]
            .iter()
            .map(|n| n.parse().expect("a message count"))
            .collect();
        let (ready, unacked) = (row[0], row[1]);
        assert!(
            unacked <= usize::from(prefetch),
            "the consumer holds {unacked} unacknowledged messages, more than its prefetch of {prefetch}"
        );
        (ready + unacked == published && unacked == usize::from(prefetch)).then_some(())
    })
    .await;
    assert_eq!(
        app.metrics().events_accepted.get(),
        accepted_before,
        "nothing can be counted while the database is down"
    );
    let dead_lettered = || -> u64 {
        meterd::ingest::ErrorCode::ALL
            .iter()
            .map(|c| {
                app.metrics()
                    .messages_dead_lettered
                    .with_label_values(&[c.as_str()])
                    .get()
            })
            .sum()
    };
    assert_eq!(dead_lettered(), 0);
    assert_eq!(
        queue_state(&settings, &settings.amqp.dead_letter_queue)
            .await
            .0,
        0
    );

    outage.end().await;
    common::wait_for_requests(&app.pool, workload.expected_count()).await;
    settle(&app, &mut workload).await;
    assert_totals(&app.pool, &workload).await;
    assert_eq!(dead_lettered(), 0, "a transient failure is never poison");
    assert_eq!(
        queue_state(&settings, &settings.amqp.dead_letter_queue)
            .await
            .0,
        0,
        "the dead-letter queue stays empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing() {
    let mut settings = test_settings();
    // A bounded window of unacknowledged work, so a backlog is left when it stops.
    settings.amqp.prefetch = 200;
    settings.amqp.batch_max_messages = 50;
    let app = spawn_app_role(settings.clone(), ServeRole::Api).await;
    let mut workload = Workload::new(5);
    let backlog = workload.stream(20_000, 0.1);
    publish_all(&app, &workload.messages(&backlog, 50)).await;
    let mut meterd = Meterd::start(&settings, "all");
    let stopped = CancellationToken::new();

    let publishing = async {
        while !stopped.is_cancelled() {
            let n = workload.rng.random_range(1..=50);
            let events = workload.stream(n, 0.1);
            publish_all(&app, &workload.messages(&events, 50)).await;
        }
    };
    let stopping = async {
        eventually("meterd busy", async || {
            (counted_requests(&app.pool).await >= 2_000).then_some(())
        })
        .await;
        meterd.terminate();
        let status = meterd.exit_status(Duration::from_secs(10)).await;
        stopped.cancel();
        status
    };
    let ((), status) = tokio::join!(publishing, stopping);
    assert!(status.success(), "meterd exited with {status}");
    assert!(
        counted_requests(&app.pool).await < workload.expected_count(),
        "meterd finished the backlog before it was stopped"
    );

    let _consumer = Meterd::start(&settings, "consumer");
    common::wait_for_requests(&app.pool, workload.expected_count()).await;
    settle(&app, &mut workload).await;
    assert_totals(&app.pool, &workload).await;
}

/// The consumers on `queue` as (tag, prefetch) from the broker.
async fn broker_consumers(queue: &str) -> Vec<(String, u32)> {
    rabbitmqctl(&[
        "list_consumers",
        "queue_name",
        "consumer_tag",
        "prefetch_count",
        "-q",
    ])
    .await
    .lines()
    .filter_map(|line| {
        let mut cols = line.split('\t');
        (cols.next()? == queue)
            .then(|| Some((cols.next()?.to_owned(), cols.next()?.parse().ok()?)))?
    })
    .collect()
}

/// The prefetch follows message size by replacing the consumer (a per-consumer prefetch,
/// not the channel-wide one that costs RabbitMQ a third of its rate): after single events
/// the one consumer has the full prefetch; after large arrays, a smaller one; nothing is
/// lost or counted twice on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_follows_message_size_with_one_consumer_at_a_time() {
    let mut settings = test_settings();
    settings.amqp.prefetch = 2_000;
    settings.amqp.max_events_in_flight = 4_000;
    let app = spawn_app_with(settings.clone()).await;
    let queue = settings.amqp.queue.clone();
    let ts = Utc::now().to_rfc3339();
    let event = |i: usize| json!({"id": format!("p{i}"), "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": 2, "memory_mb": 128});

    for i in 0..300 {
        app.publish_json(&event(i)).await;
    }
    common::wait_for_requests(&app.pool, 300).await;
    let consumers = eventually("the full prefetch for single events", async || {
        let c = broker_consumers(&queue).await;
        (c.len() == 1 && c[0].1 == 2_000).then_some(c)
    })
    .await;

    // 200-event arrays: about 4,000 / 200 = 20 messages in flight, once the average says so.
    let mut next = 300;
    for _ in 0..60 {
        let body: Vec<Value> = (next..next + 200).map(event).collect();
        next += 200;
        app.publish_json(&json!(body)).await;
    }
    common::wait_for_requests(&app.pool, next as i64).await;
    let narrowed = eventually("a narrower prefetch for arrays", async || {
        let c = broker_consumers(&queue).await;
        (c.len() == 1 && c[0].1 < 2_000).then_some(c)
    })
    .await;
    assert_ne!(
        narrowed[0].0, consumers[0].0,
        "a new consumer, not a changed one"
    );
    assert_eq!(common::counted_requests(&app.pool).await, next as i64);
}
