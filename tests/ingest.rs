//! Ingestion over AMQP and HTTP: exact buckets, duplicates, dead letters.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{spawn_app, spawn_app_role, spawn_app_with, test_settings};
use meterd::app::ServeRole;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// An event as the test generates it, with durations in exact microseconds.
#[derive(Clone)]
struct Invocation {
    id: String,
    tenant: String,
    function: String,
    timestamp: DateTime<Utc>,
    duration_us: u64,
    init_us: Option<u64>,
    memory_mb: u64,
    arch: Option<&'static str>,
}

impl Invocation {
    fn json(&self) -> Value {
        let mut v = json!({
            "id": self.id, "tenant": self.tenant, "function": self.function,
            "timestamp": self.timestamp.to_rfc3339(),
            "memory_mb": self.memory_mb,
        });
        // Durations go out as exact decimal text, e.g. 120.057.
        v["duration_ms"] = serde_json::from_str(&micros_text(self.duration_us)).unwrap();
        if let Some(init) = self.init_us {
            v["init_duration_ms"] = serde_json::from_str(&micros_text(init)).unwrap();
        }
        if let Some(arch) = self.arch {
            v["arch"] = json!(arch);
        }
        v
    }
}

fn micros_text(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

fn random_workload(rng: &mut StdRng, n: usize, now: DateTime<Utc>) -> Vec<Invocation> {
    (0..n)
        .map(|i| Invocation {
            id: format!("ev-{i}"),
            tenant: format!("t{}", rng.random_range(0..4)),
            function: ["resize", "thumb", "api/get", "ünïcode λ"][rng.random_range(0..4)]
                .to_owned(),
            timestamp: now - Duration::minutes(rng.random_range(0..(3 * 24 * 60))),
            duration_us: rng.random_range(0..5_000_000),
            init_us: rng.random_bool(0.2).then(|| rng.random_range(0..900_000)),
            memory_mb: rng.random_range(1..=10_240),
            arch: [None, Some("x86_64"), Some("arm64")][rng.random_range(0..3)],
        })
        .collect()
}

/// Expected usage rows keyed as the harness returns them, computed from the metering rules
/// with integer arithmetic only.
fn expected_usage(
    events: &[Invocation],
    tenant: &str,
    rules: &meterd::metering::MeteringRules,
) -> BTreeMap<(String, String, String), [String; 3]> {
    let mut sums: BTreeMap<(String, String, String), (u64, u128, u128)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.tenant == tenant) {
        let total_us = e.duration_us + e.init_us.unwrap_or(0);
        let ms = total_us.div_ceil(1000);
        let g = rules.duration_granularity_ms;
        let billed_ms = (ms.div_ceil(g) * g).max(rules.min_duration_ms);
        let mg = u64::from(rules.memory_granularity_mb);
        let billed_mb = (e.memory_mb.div_ceil(mg) * mg).max(u64::from(rules.min_memory_mb));
        let hour = e.timestamp.duration_trunc(Duration::hours(1)).unwrap();
        let key = (
            hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.function.clone(),
            e.arch.unwrap_or("x86_64").to_owned(),
        );
        let s = sums.entry(key).or_default();
        s.0 += 1;
        s.1 += u128::from(billed_ms);
        s.2 += u128::from(billed_ms) * u128::from(billed_mb);
    }
    sums.into_iter()
        .map(|(k, (req, ms, mbms))| {
            let compute = (Decimal::from(mbms as u64) / Decimal::from(1_024_000)).normalize();
            let duration = (Decimal::from(ms as u64) / Decimal::from(1000)).normalize();
            (
                k,
                [req.to_string(), compute.to_string(), duration.to_string()],
            )
        })
        .collect()
}

/// Publishes the workload as a mix of single events and arrays.
async fn publish_mixed(app: &common::TestApp, rng: &mut StdRng, events: &[Invocation]) {
    let mut i = 0;
    while i < events.len() {
        let n = [1, 1, 3, 17, 50][rng.random_range(0..5)].min(events.len() - i);
        let chunk = &events[i..i + n];
        if n == 1 && rng.random_bool(0.5) {
            app.publish_json(&chunk[0].json()).await;
        } else {
            app.publish_json(&Value::Array(chunk.iter().map(Invocation::json).collect()))
                .await;
        }
        i += n;
    }
}

fn usage_window(now: DateTime<Utc>) -> String {
    let to = now.duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(1);
    let from = to - Duration::days(4);
    format!(
        "from={}&to={}&group_by=function,arch",
        from.format("%Y-%m-%dT%H:00:00Z"),
        to.format("%Y-%m-%dT%H:00:00Z")
    )
}

async fn check_random_workload(settings: meterd::config::Settings, seed: u64) {
    let rules = settings.metering.clone();
    let app = spawn_app_with(settings).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Utc::now();
    let events = random_workload(&mut rng, 1500, now);
    publish_mixed(&app, &mut rng, &events).await;
    app.wait_for_requests(events.len() as i64).await;
    for tenant in ["t0", "t1", "t2", "t3"] {
        let got = app.usage(tenant, &usage_window(now), app.admin_key()).await;
        assert_eq!(
            got,
            expected_usage(&events, tenant, &rules),
            "tenant {tenant}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_land_in_exact_hourly_buckets() {
    check_random_workload(test_settings(), 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_style_rules_round_duration_and_memory_up() {
    let mut settings = test_settings();
    settings.metering.duration_granularity_ms = 100;
    settings.metering.min_duration_ms = 100;
    settings.metering.memory_granularity_mb = 128;
    settings.metering.min_memory_mb = 128;
    check_random_workload(settings, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_and_month_granularity_sum_the_hours() {
    let app = spawn_app().await;
    let now = Utc::now();
    let hour = now.duration_trunc(Duration::hours(1)).unwrap();
    let event = |id: &str, ts: DateTime<Utc>, f: &str| {
        json!({"id": id, "tenant": "acme", "function": f, "timestamp": ts.to_rfc3339(),
               "duration_ms": 1000, "memory_mb": 1024})
    };
    app.publish_json(&json!([
        event("a", hour, "f"),
        event("b", hour - Duration::hours(1), "f"),
        event("c", hour - Duration::hours(1), "g")
    ]))
    .await;
    app.wait_for_requests(3).await;
    let from = (hour - Duration::days(40)).format("%Y-%m-%dT%H:00:00Z");
    let to = (hour + Duration::hours(1)).format("%Y-%m-%dT%H:00:00Z");
    let (status, body) = app
        .get(
            &format!("/v1/tenants/acme/usage?from={from}&to={to}&granularity=month"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let total: u64 = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 3);
    assert!(
        body["data"][0].get("function").is_none(),
        "ungrouped rows carry no function: {body}"
    );
    let first = &body["data"][0];
    assert!(
        first["bucket_start"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{first}"
    );
    // 1 s at 1 GB is 1 GB-s per event.
    let (_, body) = app
        .get(
            &format!("/v1/tenants/acme/usage?from={from}&to={to}&granularity=day&function=g"),
            Some(app.admin_key()),
        )
        .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["data"][0]["compute"], "1");
    assert_eq!(body["data"][0]["duration"], "1");
    assert_eq!(body["data"][0]["requests"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_count_once_whatever_their_other_fields_say() {
    let app = spawn_app().await;
    let ts = Utc::now().to_rfc3339();
    let e = |id: &str, duration: u64| json!({"id": id, "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": duration, "memory_mb": 128});
    // Within one message, across messages, with altered fields, and the same id for
    // another tenant (which is a different event).
    app.publish_json(&json!([e("1", 100), e("1", 100), e("2", 100)]))
        .await;
    app.publish_json(&e("1", 999)).await;
    app.publish_json(&json!([e("2", 5), e("3", 100)])).await;
    let mut other = e("1", 100);
    other["tenant"] = json!("globex");
    app.publish_json(&other).await;
    app.wait_for_requests(4).await;
    // A last distinct event proves everything before it was processed.
    app.publish_json(&e("4", 100)).await;
    app.wait_for_requests(5).await;
    let (_, ms): (i64, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT sum(requests)::int8, sum(billed_ms) FROM usage_hourly WHERE tenant = 'acme'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        ms,
        Decimal::from(400),
        "the altered duplicates must not count"
    );
    assert_eq!(app.metrics().events_duplicate.get(), 3);
    assert_eq!(app.metrics().events_accepted.get(), 5);
}

/// Batches are recorded two at a time; a later copy of an id in the next batch must still
/// lose to the first copy delivered, however the two transactions interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_delivered_copy_of_an_id_counts_even_when_batches_overlap() {
    let mut settings = test_settings();
    // Small batches from a backlog, so an original and its later copy travel in batches
    // recorded at the same time.
    settings.amqp.batch_max_messages = 8;
    let app = spawn_app_role(settings.clone(), ServeRole::Api).await;
    let ts = Utc::now().to_rfc3339();
    let e = |id: usize, duration: u64| json!({"id": id.to_string(), "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": duration, "memory_mb": 128});
    const IDS: usize = 1_000;
    const LAG: usize = 8;
    // Each round starts a fresh consumer (and pool) on a new backlog: the two transactions
    // of a consumer's first batches race hardest while their connections are being opened.
    for round in 0..4 {
        let first = round * IDS;
        let mut backlog = Vec::with_capacity(2 * IDS);
        for i in first..first + IDS + LAG {
            if i < first + IDS {
                backlog.push(e(i, 100));
            }
            if i >= first + LAG {
                backlog.push(e(i - LAG, 999));
            }
        }
        app.publish_all(&backlog).await;
        let consumer = meterd::app::start(
            settings.clone(),
            ServeRole::Consumer,
            CancellationToken::new(),
        )
        .await
        .expect("the consumer starts");
        let counted = (first + IDS) as i64;
        app.wait_for_requests(counted).await;
        // The later copies may still be on their way: every one must end up a duplicate.
        let deadline = std::time::Instant::now() + common::DEADLINE;
        while consumer.metrics.events_duplicate.get() < IDS as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "the copies were not all seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(consumer.metrics.events_duplicate.get(), IDS as u64);
        assert_eq!(consumer.metrics.events_accepted.get(), IDS as u64);
        consumer.stop().await;
        let (requests, ms): (i64, Decimal) = sqlx::query_as(
            "SELECT sum(requests)::int8, sum(billed_ms) FROM usage_hourly WHERE tenant = 'acme'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(requests, counted);
        assert_eq!(
            ms,
            Decimal::from(100 * counted),
            "every id must be billed as its first delivered copy (round {round})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_class_is_dead_lettered_with_its_code_and_original_body() {
    let app = spawn_app().await;
    let now = Utc::now();
    let good = |id: &str| json!({"id": id, "tenant": "acme", "function": "f", "timestamp": now.to_rfc3339(), "duration_ms": 10, "memory_mb": 128});
    let with = |field: &str, value: Value| {
        let mut e = good("x");
        e[field] = value;
        e
    };
    let without = |field: &str| {
        let mut e = good("x");
        e.as_object_mut().unwrap().remove(field);
        e
    };
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "invalid_json"),
        (vec![0xc3, 0x28], "invalid_json"),
        (b"[]".to_vec(), "invalid_shape"),
        (b"\"event\"".to_vec(), "invalid_shape"),
        (
            serde_json::to_vec(&json!([good("a"), 5])).unwrap(),
            "invalid_shape",
        ),
        (
            serde_json::to_vec(&with(
                "timestamp",
                json!((now - Duration::days(91)).to_rfc3339()),
            ))
            .unwrap(),
            "too_old",
        ),
        (
            serde_json::to_vec(&with(
                "timestamp",
                json!((now + Duration::minutes(10)).to_rfc3339()),
            ))
            .unwrap(),
            "in_future",
        ),
        (
            serde_json::to_vec(&Value::Array(vec![good("m"); 10_001])).unwrap(),
            "too_many_events",
        ),
        (vec![b' '; 4 * 1024 * 1024 + 1], "too_large"),
        (
            serde_json::to_vec(&json!([good("b"), good("c"), with("memory_mb", json!(0))]))
                .unwrap(),
            "invalid_value",
        ),
    ];
    for field in [
        "id",
        "tenant",
        "function",
        "timestamp",
        "duration_ms",
        "memory_mb",
    ] {
        cases.push((
            serde_json::to_vec(&without(field)).unwrap(),
            "missing_field",
        ));
    }
    for (field, value) in [
        ("id", json!("")),
        ("tenant", json!("bad tenant")),
        ("function", json!("a\u{7}b")),
        ("timestamp", json!("2026-11-21 10:00")),
        ("duration_ms", json!(-1)),
        ("duration_ms", json!(3_600_001)),
        ("init_duration_ms", json!("5")),
        ("memory_mb", json!(65_537)),
        ("memory_mb", json!(1.5)),
        ("arch", json!("riscv")),
    ] {
        cases.push((
            serde_json::to_vec(&with(field, value)).unwrap(),
            "invalid_value",
        ));
    }
    for (i, (body, _)) in cases.iter().enumerate() {
        app.publish(body).await;
        // Good messages interleaved with the poison must still be counted.
        app.publish_json(&good(&format!("good-{i}"))).await;
    }
    let letters = app.dead_letters(cases.len()).await;
    for ((body, code), letter) in cases.iter().zip(&letters) {
        assert_eq!(&letter.code, code, "reason: {}", letter.reason);
        assert!(
            &letter.body == body,
            "the dead letter's body must be the original ({code})"
        );
        assert!(!letter.reason.is_empty());
    }
    assert!(
        letters
            .iter()
            .any(|l| l.reason.starts_with("events[2].memory_mb")),
        "array reasons name the index"
    );
    app.wait_for_requests(cases.len() as i64).await;
    let dead: u64 = meterd::ingest::ErrorCode::ALL
        .iter()
        .map(|c| {
            app.metrics()
                .messages_dead_lettered
                .with_label_values(&[c.as_str()])
                .get()
        })
        .sum();
    assert_eq!(dead, cases.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_shares_validation_and_idempotency() {
    let app = spawn_app().await;
    let ingest = app.issue_key("ingest", None).await;
    let ts = Utc::now().to_rfc3339();
    let e = |id: &str| json!({"id": id, "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": 1.5, "memory_mb": 128});
    let (status, body) = app
        .post(
            "/v1/events",
            Some(&ingest),
            &json!([e("1"), e("2"), e("1")]),
        )
        .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"accepted": 2, "duplicates": 1})),
        "{body}"
    );
    let (status, body) = app.post("/v1/events", Some(app.admin_key()), &e("2")).await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 0, "duplicates": 1}))
    );
    assert_eq!(app.counted_requests().await, 2);

    let mut bad = e("3");
    bad["memory_mb"] = json!(0);
    let (status, body) = app
        .post("/v1/events", Some(&ingest), &json!([e("3"), bad]))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_value");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events[1].memory_mb"),
        "{body}"
    );
    let res = app
        .http
        .post(format!("{}/v1/events", app.base_url))
        .bearer_auth(&ingest)
        .body(vec![b' '; 4 * 1024 * 1024 + 10])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    let res = app
        .http
        .post(format!("{}/v1/events", app.base_url))
        .bearer_auth(&ingest)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    assert_eq!(
        app.counted_requests().await,
        2,
        "rejected bodies count nothing"
    );

    let tenant = app.issue_key("tenant", Some("acme")).await;
    let (status, body) = app.post("/v1/events", Some(&tenant), &e("9")).await;
    assert_eq!(status, 403, "{body}");
}

/// The ledger is tried with a plain insert, then (after duplicates) with one that skips known
/// ids, and falls back to ON CONFLICT when the unique index refuses a batch: whichever path a
/// batch takes, and however consumers race, each id is counted once.
#[tokio::test]
async fn every_ledger_path_counts_each_id_once_even_when_consumers_race() {
    use meterd::metering::{MeterStore, UsageEvent};
    let app = spawn_app().await;
    let rules = app.settings.metering.clone();
    let ts = Utc::now().to_rfc3339();
    let events = |ids: std::ops::Range<u32>, function: &str| -> Vec<UsageEvent> {
        let body: Vec<Value> = ids
            .map(|i| json!({"id": format!("e{i}"), "tenant": format!("t{}", i % 3), "function": function, "timestamp": ts, "duration_ms": 10, "memory_mb": 128}))
            .collect();
        meterd::ingest::decode_message(&serde_json::to_vec(&body).unwrap(), &rules, Utc::now())
            .expect("valid events")
    };
    let store = MeterStore::new(app.pool.clone(), rules.clone(), "default".into());
    let outcome = |o: meterd::metering::RecordOutcome| (o.accepted, o.duplicates);

    // A fresh store inserts plainly; a batch holding committed ids is refused by the unique
    // index and recorded again with ON CONFLICT; the next batches skip known ids.
    let r = store.record_events(&events(0..5, "f")).await.unwrap();
    assert_eq!(outcome(r), (5, 0));
    let r = store.record_events(&events(3..8, "altered")).await.unwrap();
    assert_eq!(outcome(r), (3, 2));
    let r = store.record_events(&events(6..10, "f")).await.unwrap();
    assert_eq!(outcome(r), (2, 2));
    assert_eq!(app.counted_requests().await, 10);

    // Two stores (two consumers) both fresh, so both try plain inserts, racing on the same
    // ids in opposite halves of each round.
    let (a, b) = (
        MeterStore::new(app.pool.clone(), rules.clone(), "default".into()),
        MeterStore::new(app.pool.clone(), rules.clone(), "default".into()),
    );
    let mut accepted = 0;
    for round in 0..20u32 {
        let base = 1_000 + round * 100;
        let (ea, eb) = (
            events(base..base + 80, "f"),
            events(base + 20..base + 100, "f"),
        );
        let (ra, rb) = tokio::join!(a.record_events(&ea), b.record_events(&eb));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.accepted + ra.duplicates, 80);
        assert_eq!(rb.accepted + rb.duplicates, 80);
        assert_eq!(ra.accepted + rb.accepted, 100, "round {round}");
        accepted += ra.accepted + rb.accepted;
    }
    assert_eq!(accepted, 2_000);
    assert_eq!(app.counted_requests().await, 2_010);
    let (ledger,): (i64,) = sqlx::query_as("SELECT count(*) FROM accepted_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 2_010);
}

/// Ingestion writes usage_monthly only for hours already rolled up, and the roll-up adds the
/// rest and moves its watermark. With two consumers and the roll-up racing over events spread
/// across 30 hours (so many arrive after their hour was rolled up), a period's usage is, at
/// every instant, exactly the hourly rows' sum, and in the end exactly the events sent, each
/// once; and once every hour is rolled up, usage_monthly alone holds them.
#[tokio::test]
async fn a_roll_up_racing_ingestion_counts_every_event_once_in_its_period() {
    use meterd::metering::{MeterStore, rollup};
    type Sums = BTreeMap<(String, String, String, String), (i64, i64)>;

    let mut app = spawn_app().await;
    // This test drives the roll-up itself, from before the first event's hour.
    app.stop().await;
    sqlx::query("UPDATE usage_rollup SET rolled_to = '-infinity'")
        .execute(&app.pool)
        .await
        .unwrap();
    let rules = app.settings.metering.clone();
    let first_hour = Utc::now()
        .duration_trunc(chrono::TimeDelta::hours(1))
        .unwrap()
        - chrono::TimeDelta::hours(30);

    let mut rng = StdRng::seed_from_u64(7);
    let mut expected = Sums::new();
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let mut sent: Vec<Value> = Vec::new();
    for i in 0..6_000u32 {
        let tenant = format!("t{}", rng.random_range(0..3));
        let function = format!("f{}", rng.random_range(0..4));
        let arch = ["x86_64", "arm64"][rng.random_range(0..2)];
        let at = first_hour + chrono::TimeDelta::seconds(rng.random_range(0..30 * 3600));
        let duration: i64 = rng.random_range(1..5_000);
        let period = meterd::billing::period::period_start(at).to_string();
        let sums = expected
            .entry((tenant.clone(), period, function.clone(), arch.to_owned()))
            .or_default();
        sums.0 += 1;
        sums.1 += duration;
        sent.push(
            json!({"id": format!("e{i}"), "tenant": tenant, "function": function,
            "arch": arch, "timestamp": at.to_rfc3339(), "duration_ms": duration, "memory_mb": 128}),
        );
        if sent.len() == 150 {
            // Every batch re-sends a few ids of the one before: duplicates count once.
            let mut batch = std::mem::take(&mut sent);
            if let Some(prev) = batches.last() {
                batch.extend(prev[..10].iter().cloned());
            }
            batches.push(batch);
        }
    }
    let decode = |batch: &Vec<Value>| {
        meterd::ingest::decode_message(&serde_json::to_vec(batch).unwrap(), &rules, Utc::now())
            .expect("valid events")
    };

    // A period's usage as billing reads it (usage_monthly plus the hourly tail), and the
    // hourly rows' sums, in one snapshot.
    async fn both_views(pool: &sqlx::PgPool) -> (Sums, Sums) {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await
            .unwrap();
        let hourly: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT tenant, date_trunc('month', hour AT TIME ZONE 'UTC')::date::text, function,
                    arch, sum(requests)::int8, sum(billed_ms)::int8
             FROM usage_hourly GROUP BY 1, 2, 3, 4",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let mut billed = Sums::new();
        let mut hourly_sums = Sums::new();
        for (tenant, period, function, arch, requests, ms) in hourly {
            let p: chrono::NaiveDate = period.parse().unwrap();
            if !billed.keys().any(|k| k.0 == tenant && k.1 == period) {
                let rows: Vec<(String, String, i64, String, String)> =
                    sqlx::query_as(rollup::PERIOD_USAGE)
                        .bind(&tenant)
                        .bind(p)
                        .bind(meterd::billing::period::period_start_instant(p))
                        .bind(meterd::billing::period::period_start_instant(
                            meterd::billing::period::next_period(p),
                        ))
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                for (f, a, r, b, _) in rows {
                    let key = (tenant.clone(), period.clone(), f, a);
                    billed.insert(key, (r, b.parse().unwrap()));
                }
            }
            hourly_sums.insert((tenant, period, function, arch), (requests, ms));
        }
        (billed, hourly_sums)
    }

    let stores = [
        MeterStore::new(app.pool.clone(), rules.clone(), "default".into()),
        MeterStore::new(app.pool.clone(), rules.clone(), "default".into()),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let ingest = async {
        let mut accepted = 0;
        for pair in batches.chunks(2) {
            let events: Vec<_> = pair.iter().map(decode).collect();
            let outcomes = futures_util::future::join_all(
                events
                    .iter()
                    .zip(&stores)
                    .map(|(events, store)| store.record_events(events)),
            )
            .await;
            accepted += outcomes
                .into_iter()
                .map(|o| o.unwrap().accepted)
                .sum::<u64>();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        accepted
    };
    let roll = async {
        let mut rolls = 0;
        let mut hour = first_hour;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            if hour < first_hour + chrono::TimeDelta::hours(30) {
                hour += chrono::TimeDelta::hours(1);
                if rollup::roll_up(&app.pool, hour).await.unwrap() > 0 {
                    rolls += 1;
                }
            }
            let (billed, hourly) = both_views(&app.pool).await;
            assert_eq!(
                billed, hourly,
                "period usage = hourly sums at every instant"
            );
        }
        rolls
    };
    let (accepted, rolls) = tokio::join!(ingest, roll);
    assert_eq!(accepted, 6_000, "each id counted once");
    assert!(
        rolls >= 3,
        "the roll-up raced ingestion ({rolls} roll-ups added rows)"
    );

    let (billed, hourly) = both_views(&app.pool).await;
    assert_eq!(billed, expected, "period usage = the events sent");
    assert_eq!(hourly, expected, "hourly buckets = the events sent");
    let (late,): (i64,) = sqlx::query_as("SELECT count(*) FROM usage_monthly")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        late > 0,
        "some usage went to usage_monthly as late or rolled up"
    );

    rollup::roll_up(&app.pool, Utc::now() + chrono::TimeDelta::hours(2))
        .await
        .unwrap();
    let monthly: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT tenant, period::text, function, arch, requests, billed_ms::int8 FROM usage_monthly",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let monthly: Sums = monthly
        .into_iter()
        .map(|(t, p, f, a, r, b)| ((t, p, f, a), (r, b)))
        .collect();
    assert_eq!(
        monthly, expected,
        "usage_monthly after rolling up every hour"
    );
    assert_eq!(
        both_views(&app.pool).await.0,
        expected,
        "and the period usage unchanged"
    );
}

/// The ledger forgets only ids whose events would be rejected as too old anyway: rows
/// accepted more than `max_event_age_days` + 1 day ago go (in chunks, however many there
/// are), younger rows stay and still make re-sent events duplicates, and the buckets keep
/// everything they counted.
#[tokio::test]
async fn pruning_the_ledger_forgets_only_ids_that_could_no_longer_be_accepted() {
    use meterd::metering::retention::prune_ledger;

    let app = spawn_app().await;
    let max_age = app.settings.metering.max_event_age_days;
    let at = Utc::now() - Duration::minutes(5);
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"id": format!("e{i}"), "tenant": "acme", "function": "f", "arch": "arm64",
                   "timestamp": at.to_rfc3339(), "duration_ms": 10, "memory_mb": 128})
        })
        .collect();
    app.ingest(&events).await;
    // e0..e9 were accepted just over the retention ago, e10..e19 just inside it.
    for (ids, age) in [
        ("^e[0-9]$", format!("{} days 1 hour", max_age + 1)),
        ("^e1[0-9]$", format!("{} days 23 hours", max_age)),
    ] {
        sqlx::query(
            "UPDATE accepted_events SET accepted_at = now() - $2::interval
             WHERE tenant = 'acme' AND event_id ~ $1",
        )
        .bind(ids)
        .bind(age)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    // More prunable rows than one delete statement takes.
    sqlx::query(
        "INSERT INTO accepted_events (tenant, event_id, accepted_at)
         SELECT 'old', 'o' || n, now() - make_interval(days => $1 + 2)
         FROM generate_series(1, 25000) AS n",
    )
    .bind(max_age as i32)
    .execute(&app.pool)
    .await
    .unwrap();

    // (The app's own pruner ran at start, before any of this; the state is what is asserted.)
    prune_ledger(&app.pool, max_age).await.unwrap();
    assert_eq!(
        prune_ledger(&app.pool, max_age).await.unwrap(),
        0,
        "idempotent"
    );
    let mut kept: Vec<(String,)> =
        sqlx::query_as("SELECT event_id FROM accepted_events ORDER BY event_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    kept.sort_by_key(|(id,)| id[1..].parse::<u32>().unwrap());
    let kept: Vec<String> = kept.into_iter().map(|(id,)| id).collect();
    let expected: Vec<String> = (10..30).map(|i| format!("e{i}")).collect();
    assert_eq!(kept, expected);
    assert_eq!(
        app.counted_requests().await,
        30,
        "buckets keep pruned events"
    );

    // Ids still in the ledger are still duplicates.
    app.ingest(&events[10..]).await;
    assert_eq!(app.counted_requests().await, 30);
}

/// Sends a request head (and `body_start` of its body) on a raw connection; the caller
/// writes the rest, or not.
async fn raw_post(
    app: &common::TestApp,
    length: usize,
    body_start: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.admin_key()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    stream
}

/// Reads one HTTP/1.1 response with a Content-Length body: status, lower-cased headers, body.
async fn read_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> (u16, BTreeMap<String, String>, Value) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_slower_than_the_read_deadline_gets_408() {
    let mut settings = test_settings();
    settings.http.body_read_timeout_secs = 1;
    let app = spawn_app_with(settings).await;
    let started = std::time::Instant::now();
    let stream = raw_post(&app, 100_000, b"[").await;
    let (mut reader, mut writer) = stream.into_split();
    // 1 KB/s: a hundred bytes every tenth of a second, for longer than the test waits.
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while writer.write_all(&[b' '; 100]).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let (status, _, body) = tokio::time::timeout(common::DEADLINE, read_response(&mut reader))
        .await
        .expect("an answer before the test's deadline");
    let waited = started.elapsed();
    trickle.abort();
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.body_read_timeout_secs"),
        "{body}"
    );
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(4),
        "answered after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_ingest_buffer_budget_get_503_with_retry_after() {
    let mut settings = test_settings();
    settings.http.ingest_buffer_bytes = 1000;
    // The slow body must hold its share until this test sends the rest, however slow the
    // machine: a body timed out releases its share.
    settings.http.body_read_timeout_secs = 300;
    let app = spawn_app_with(settings).await;
    let ts = Utc::now().to_rfc3339();
    let event = |id: &str| {
        serde_json::to_vec(&json!({"id": id, "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": 1, "memory_mb": 128}))
            .unwrap()
    };
    // A body of 800 declared bytes, not yet sent, holds 800 of the 1000.
    let mut slow_body = event("slow");
    slow_body.resize(800, b' ');
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let mut n = 0;
    let (mut slow, headers, body) = 'attempt: loop {
        let mut slow = raw_post(&app, slow_body.len(), &slow_body[..1]).await;
        loop {
            n += 1;
            let mut other = event(&format!("other-{n}"));
            other.resize(300, b' ');
            let mut stream = raw_post(&app, other.len(), &other).await;
            let (status, headers, body) = read_response(&mut stream).await;
            if status == 503 {
                break 'attempt (slow, headers, body);
            }
            // The slow request's handler had not started yet...
            assert_eq!(status, 200, "{body}");
            assert!(std::time::Instant::now() < deadline, "never refused");
            // ...or it started while this one held 300 bytes, and was refused itself: the
            // budget works both ways. Start a new slow body.
            let early = std::time::Duration::from_millis(100);
            if let Ok((status, _, body)) =
                tokio::time::timeout(early, read_response(&mut slow)).await
            {
                assert_eq!(
                    (status, &body["error"]["code"]),
                    (503, &json!("busy")),
                    "{body}"
                );
                continue 'attempt;
            }
        }
    };
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));

    use tokio::io::AsyncWriteExt;
    slow.write_all(&slow_body[1..]).await.unwrap();
    let (status, _, body) = read_response(&mut slow).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    // The budget is whole again once the body is recorded.
    let mut again = event("again");
    again.resize(900, b' ');
    let mut stream = raw_post(&app, again.len(), &again).await;
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body}");
}
