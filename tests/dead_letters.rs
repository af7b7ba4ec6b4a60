//! The dead-letter tooling: `list` shows without consuming, `replay` republishes the fixed
//! ones exactly once and leaves the rest.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::{DEADLINE, spawn_app_with, test_settings};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use meterd::config::Settings;
use meterd::ingest::ErrorCode;
use meterd::ingest::dead_letters::{self, PREVIEW_BYTES, ReplayOutcome};
use serde_json::{Value, json};

/// Messages ready in the dead-letter queue, by a passive declare (nothing is consumed).
async fn dead_letter_count(settings: &Settings) -> u32 {
    let connection = meterd::ingest::topology::connect(&settings.amqp, "meterd-test-dlq-count")
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            settings.amqp.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    let _ = connection.close(200, "bye".into()).await;
    queue.message_count()
}

/// Polls until the dead-letter queue holds exactly `expected` messages.
async fn wait_for_dead_letters(settings: &Settings, expected: u32) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = dead_letter_count(settings).await;
        if n == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the dead-letter queue holds {n} messages, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event(id: &str, duration_ms: u64, timestamp: chrono::DateTime<Utc>) -> Value {
    json!({"id": id, "tenant": "acme", "function": "resize", "timestamp": timestamp.to_rfc3339(),
           "duration_ms": duration_ms, "memory_mb": 128})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_without_consuming_and_replay_counts_fixed_messages_once() {
    let settings = test_settings();
    let mut app = spawn_app_with(settings.clone()).await;
    let now = Utc::now();
    let too_long = 5_000_000; // above the default max_duration_ms of 3,600,000
    let old = now - chrono::Duration::days(91);
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (
            serde_json::to_vec(&event("v1", too_long, now)).unwrap(),
            "invalid_value",
        ),
        (
            serde_json::to_vec(&event("o1", 10, old)).unwrap(),
            "too_old",
        ),
        // Two events, one of them too long: the whole message is dead-lettered.
        (
            serde_json::to_vec(&json!([event("v2", 10, now), event("v3", too_long, now)])).unwrap(),
            "invalid_value",
        ),
        (b"not json\n\x1b[31m\xff".to_vec(), "invalid_json"),
        (
            serde_json::to_vec(&event("o2", 10, old)).unwrap(),
            "too_old",
        ),
        (
            serde_json::to_vec(&event("v4", too_long, now)).unwrap(),
            "invalid_value",
        ),
    ];
    for (i, (body, _)) in bodies.iter().enumerate() {
        app.publish(body).await;
        app.publish_json(&event(&format!("good-{i}"), 10, now))
            .await;
    }
    app.wait_for_requests(6).await;
    wait_for_dead_letters(&settings, 6).await;

    // list: everything, in order, with its code; then the queue still holds it all.
    let listing = dead_letters::list(&settings.amqp, 100).await.unwrap();
    assert_eq!(listing.queue_messages, 6);
    let codes: Vec<Option<&str>> = listing.letters.iter().map(|l| l.code.as_deref()).collect();
    let expected: Vec<Option<&str>> = bodies.iter().map(|(_, c)| Some(*c)).collect();
    assert_eq!(codes, expected);
    for ((body, _), letter) in bodies.iter().zip(&listing.letters) {
        assert_eq!(letter.routing_key, "usage.test");
        assert_eq!(letter.body_bytes, body.len());
        assert!(!letter.reason.as_deref().unwrap_or("").is_empty());
        assert_eq!(letter.truncated, body.len() > PREVIEW_BYTES);
    }
    assert!(
        listing.letters[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("duration_ms"),
        "{:?}",
        listing.letters[0].reason
    );
    assert_eq!(
        listing.letters[0].body_preview,
        String::from_utf8(bodies[0].0.clone()).unwrap()
    );
    assert_eq!(
        listing.letters[3].body_preview, "not json\\n\\u{1b}[31m\u{fffd}",
        "control characters are escaped, invalid UTF-8 replaced"
    );
    assert!(
        listing.letters[2].truncated,
        "the two-event body is over the preview size"
    );
    assert_eq!(
        listing.letters[2].body_preview,
        std::str::from_utf8(&bodies[2].0[..PREVIEW_BYTES]).unwrap()
    );
    // Requeueing is asynchronous in the broker: poll, with a deadline.
    wait_for_dead_letters(&settings, 6).await;
    // The order survives a listing, and a limit shows the oldest.
    let first_two = dead_letters::list(&settings.amqp, 2).await.unwrap();
    assert_eq!(first_two.letters, listing.letters[..2]);
    wait_for_dead_letters(&settings, 6).await;
    let again = dead_letters::list(&settings.amqp, 100).await.unwrap();
    assert_eq!(again.letters, listing.letters);
    wait_for_dead_letters(&settings, 6).await;
    let json_line = serde_json::to_value(&listing.letters[1]).unwrap();
    assert_eq!(json_line["code"], "too_old");

    // The operator fixes the cause (the limit was too strict) and restarts meterd.
    app.stop().await;
    let mut fixed = settings.clone();
    fixed.metering.max_duration_ms = 10_000_000;
    // Both TestApps clean up the same database and queues; `app` (declared first) drops last.
    let app2 = spawn_app_with(fixed).await;
    wait_for_dead_letters(&settings, 6).await;

    let one = dead_letters::replay(&settings.amqp, Some(ErrorCode::InvalidValue), Some(1))
        .await
        .unwrap();
    assert_eq!(one.replayed, 1);
    app2.wait_for_requests(7).await;

    let rest = dead_letters::replay(&settings.amqp, Some(ErrorCode::InvalidValue), None)
        .await
        .unwrap();
    assert_eq!(
        rest,
        ReplayOutcome {
            examined: 5,
            replayed: 2,
            kept: 3,
            left: 3,
        },
        "o1, the invalid_json and o2 stay"
    );
    // v2+v3 and v4; a sentinel published after them proves nothing more is on its way.
    app2.wait_for_requests(10).await;
    app2.publish_json(&event("sentinel-1", 10, now)).await;
    app2.wait_for_requests(11).await;
    wait_for_dead_letters(&settings, 3).await;
    let remaining = dead_letters::list(&settings.amqp, 100).await.unwrap();
    let codes: Vec<Option<&str>> = remaining
        .letters
        .iter()
        .map(|l| l.code.as_deref())
        .collect();
    assert_eq!(
        codes,
        [Some("too_old"), Some("invalid_json"), Some("too_old")]
    );

    // Replaying again finds nothing to replay; publishing the same bodies again counts nothing.
    let nothing = dead_letters::replay(&settings.amqp, Some(ErrorCode::InvalidValue), None)
        .await
        .unwrap();
    assert_eq!((nothing.replayed, nothing.kept, nothing.left), (0, 3, 3));
    for (body, code) in &bodies {
        if *code == "invalid_value" {
            app2.publish(body).await;
        }
    }
    app2.publish_json(&event("sentinel-2", 10, now)).await;
    app2.wait_for_requests(12).await;
    assert_eq!(app2.counted_requests().await, 12);
    assert_eq!(app2.metrics().events_duplicate.get(), 4);
    assert_eq!(app2.metrics().events_accepted.get(), 6);
    wait_for_dead_letters(&settings, 3).await;
    drop(app2);
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_still_invalid_messages_terminates_and_dead_letters_them_again() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    let old = Utc::now() - chrono::Duration::days(100);
    for i in 0..3 {
        app.publish_json(&event(&format!("old-{i}"), 10, old)).await;
    }
    wait_for_dead_letters(&settings, 3).await;

    // Every replayed copy comes straight back as a new dead letter while the replay runs; it
    // looks at no more than the three the queue held at the start.
    let outcome = dead_letters::replay(&settings.amqp, None, None)
        .await
        .unwrap();
    assert_eq!(
        (outcome.examined, outcome.replayed, outcome.kept),
        (3, 3, 0)
    );
    let dead = || {
        app.metrics()
            .messages_dead_lettered
            .with_label_values(&["too_old"])
            .get()
    };
    let deadline = Instant::now() + DEADLINE;
    while dead() < 6 {
        assert!(Instant::now() < deadline, "{} dead letters", dead());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_dead_letters(&settings, 3).await;
    let listing = dead_letters::list(&settings.amqp, 100).await.unwrap();
    let codes: Vec<Option<&str>> = listing.letters.iter().map(|l| l.code.as_deref()).collect();
    assert_eq!(codes, [Some("too_old"); 3]);
    assert_eq!(app.counted_requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_queue_is_a_clear_error() {
    let settings = test_settings(); // nothing declared these names
    let err = dead_letters::list(&settings.amqp, 10).await.unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    let err = dead_letters::replay(&settings.amqp, None, None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

/// Runs `meterd dead-letters …` on the test's settings: (success, stdout, stderr).
async fn meterd_cli(settings: &Settings, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_meterd"));
    // Nothing from this environment may point the child elsewhere than the test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("METERD") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("dead-letters")
        .args(args)
        .envs(common::settings_env(settings))
        .env("AMQP_URL", &settings.amqp.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run meterd");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_lists_as_text_or_json_lines_and_replays_by_code() {
    let settings = test_settings();
    let app = spawn_app_with(settings.clone()).await;
    let old = Utc::now() - chrono::Duration::days(100);
    app.publish_json(&event("old", 10, old)).await;
    app.publish(b"oops\r\n").await;
    wait_for_dead_letters(&settings, 2).await;

    let (ok, stdout, stderr) = meterd_cli(&settings, &["list", "--json"]).await;
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["code"], "too_old");
    assert_eq!(lines[0]["routing_key"], "usage.test");
    assert_eq!(lines[1]["code"], "invalid_json");
    assert_eq!(lines[1]["body_preview"], "oops\\r\\n");
    assert!(
        lines[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    wait_for_dead_letters(&settings, 2).await;
    let (ok, stdout, stderr) = meterd_cli(&settings, &["list", "--limit", "1"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("2 message(s); showing 1"), "{stdout}");
    assert!(stdout.contains("#1 too_old"), "{stdout}");
    assert!(!stdout.contains("invalid_json"), "{stdout}");

    wait_for_dead_letters(&settings, 2).await;
    let (ok, stdout, stderr) =
        meterd_cli(&settings, &["replay", "--code", "in_future", "--json"]).await;
    assert!(ok, "{stderr}");
    let outcome: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        outcome,
        json!({"examined": 2, "replayed": 0, "kept": 2, "left": 2})
    );
    let (ok, _, stderr) = meterd_cli(&settings, &["replay", "--code", "bogus"]).await;
    assert!(!ok);
    assert!(stderr.contains("invalid_value"), "{stderr}");
    wait_for_dead_letters(&settings, 2).await;
}

/// Polls the counted requests with a short deadline: good usage next to bad data must not
/// wait for retries.
async fn counted_within(app: &common::TestApp, expected: i64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let n = app.counted_requests().await;
        assert!(n <= expected, "counted {n}, more than the {expected} sent");
        if n == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "only {n} of {expected} good requests counted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn named(id: &str, tenant: &str, function: &str) -> Value {
    json!({"id": id, "tenant": tenant, "function": function, "timestamp": Utc::now().to_rfc3339(),
           "duration_ms": 10, "memory_mb": 128})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_an_event_is_an_invalid_value_and_never_wedges_the_queue() {
    let app = spawn_app_with(test_settings()).await;
    let bad = [
        ("id", named("a\u{0}b", "acme", "resize")),
        ("tenant", named("n1", "ac\u{0}me", "resize")),
        ("function", named("n2", "acme", "re\u{0}size")),
    ];
    let mut bodies = Vec::new();
    for (i, (_, event)) in bad.iter().enumerate() {
        bodies.push(named(&format!("good-{i}"), "acme", "resize"));
        bodies.push(event.clone());
    }
    bodies.push(named("good-last", "acme", "resize"));
    app.publish_all(&bodies).await;
    counted_within(&app, 4, Duration::from_secs(1)).await;
    let letters = app.dead_letters(3).await;
    for ((field, event), letter) in bad.iter().zip(&letters) {
        assert_eq!(letter.code, "invalid_value", "{field}: {}", letter.reason);
        assert!(
            letter.reason.starts_with(field),
            "{field}: {}",
            letter.reason
        );
        assert_eq!(letter.body, serde_json::to_vec(event).unwrap());
        // Over HTTP, the same body is a 422 naming the field, not a 503 to retry for ever.
        let (status, body) = app.post("/v1/events", Some(app.admin_key()), event).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["error"]["code"], "invalid_value");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field}: {message}");
    }
}

/// The database of this test refuses data that validation lets through: a CHECK
/// constraint, a column narrower than the spec's 128 characters, a numeric overflow and a NOT
/// NULL, each provoked by one kind of event.
async fn make_the_database_refuse_some_data(pool: &sqlx::PgPool) {
    for statement in [
        "ALTER TABLE usage_hourly ADD CONSTRAINT test_no_forbidden_function
             CHECK (function <> 'forbidden')",
        "ALTER TABLE accepted_events ALTER COLUMN event_id TYPE varchar(100) COLLATE \"C\"",
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.function = 'overflow' THEN NEW.billed_ms := NEW.billed_ms * 1e40; END IF;
             IF NEW.function = 'null-requests' THEN NEW.requests := NULL; END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER test_refuse BEFORE INSERT OR UPDATE ON usage_hourly
             FOR EACH ROW EXECUTE FUNCTION test_refuse()",
    ] {
        sqlx::query(statement).execute(pool).await.expect(statement);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_the_database_refuses_is_isolated_and_dead_lettered_while_the_rest_commits() {
    let mut settings = test_settings();
    // Long enough for the messages to share batches, so the batch must be split.
    settings.amqp.batch_linger_ms = 50;
    let app = spawn_app_with(settings).await;
    make_the_database_refuse_some_data(&app.pool).await;
    let long_id = "x".repeat(101);
    let bad = [
        (
            named("c1", "acme", "forbidden"),
            "SQLSTATE 23514",
            "test_no_forbidden_function",
        ),
        (named(&long_id, "acme", "resize"), "SQLSTATE 22001", ""),
        (named("o1", "acme", "overflow"), "SQLSTATE 22003", ""),
        (
            named("z1", "acme", "null-requests"),
            "SQLSTATE 23502",
            "requests",
        ),
    ];
    let mut bodies = Vec::new();
    let mut good = 0;
    for (i, (event, _, _)) in bad.iter().enumerate() {
        for j in 0..3 {
            bodies.push(named(&format!("good-{i}-{j}"), "acme", "resize"));
            good += 1;
        }
        bodies.push(event.clone());
    }
    // An array holding one refused event is refused whole; its good neighbours in other
    // messages are not.
    let mixed = json!([
        named("m1", "acme", "resize"),
        named("m2", "acme", "forbidden")
    ]);
    bodies.push(mixed.clone());
    bodies.push(named("good-last", "acme", "resize"));
    good += 1;
    app.publish_all(&bodies).await;
    let took = counted_within(&app, good, Duration::from_secs(1)).await;
    eprintln!("good usage next to refused data counted in {took:?}");

    let letters = app.dead_letters(bad.len() + 1).await;
    let mut expected: Vec<(Vec<u8>, &str, &str)> = bad
        .iter()
        .map(|(e, state, names)| (serde_json::to_vec(e).unwrap(), *state, *names))
        .collect();
    expected.push((
        serde_json::to_vec(&mixed).unwrap(),
        "SQLSTATE 23514",
        "test_no_forbidden_function",
    ));
    for (body, state, names) in &expected {
        let letter = letters
            .iter()
            .find(|l| &l.body == body)
            .unwrap_or_else(|| panic!("no dead letter for {}", String::from_utf8_lossy(body)));
        assert_eq!(letter.code, "rejected_by_database", "{}", letter.reason);
        assert!(letter.reason.contains(state), "{state}: {}", letter.reason);
        assert!(letter.reason.contains(names), "{names}: {}", letter.reason);
    }
    assert_eq!(
        app.metrics()
            .messages_dead_lettered
            .with_label_values(&["rejected_by_database"])
            .get(),
        expected.len() as u64
    );

    // Over HTTP the same data is a 422 with the same code, never a 503.
    for (body, state, _) in &expected {
        let event: Value = serde_json::from_slice(body).unwrap();
        let (status, answer) = app.post("/v1/events", Some(app.admin_key()), &event).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["error"]["code"], "rejected_by_database");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(state), "{message}");
    }
    assert_eq!(app.counted_requests().await, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reports_data_postgres_cannot_hold_as_a_refusal_not_an_outage() {
    let app = spawn_app_with(test_settings()).await;
    let store = meterd::metering::MeterStore::new(
        app.pool.clone(),
        Default::default(),
        "default".to_owned(),
    );
    let body = serde_json::to_vec(&named("ok", "acme", "resize")).unwrap();
    let valid = meterd::ingest::decode_message(&body, &Default::default(), Utc::now())
        .unwrap()
        .remove(0);
    // Domain values validation would refuse, built by hand: what a gap in validation lets in.
    for event in [
        meterd::metering::UsageEvent {
            id: "a\u{0}b".into(),
            ..valid.clone()
        },
        meterd::metering::UsageEvent {
            id: "other".into(),
            function: "f\u{0}".into(),
            ..valid.clone()
        },
    ] {
        let error = store
            .record_events(&[valid.clone(), event])
            .await
            .unwrap_err();
        let refusal = meterd::metering::store::DataRefusal::of(&error)
            .unwrap_or_else(|| panic!("not a refusal: {error:#}"));
        assert_eq!(refusal.sqlstate, "22021", "{error:#}");
    }
    assert_eq!(
        app.counted_requests().await,
        0,
        "a refused batch records nothing"
    );
    assert_eq!(
        store.record_events(&[valid]).await.unwrap().accepted,
        1,
        "the good event alone commits"
    );
}

mod decoder_property {
    //! Arbitrary Unicode and numbers fed to the event decoder: every input becomes either
    //! events PostgreSQL stores (written to a real database) or a dead-letter code. Never a
    //! panic, never a database refusal.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// Characters weighted towards the troublesome: NUL, controls, the tenant alphabet.
    fn text(max: usize) -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => any::<char>(),
            2 => prop::char::range('a', 'z'),
            1 => Just('\u{0}'),
            1 => prop::char::range('\u{1}', '\u{1f}'),
            1 => Just('\u{ffff}'),
            1 => prop::sample::select(vec!['.', '_', '-', '\u{7f}', '\u{85}', '\u{2028}']),
        ];
        prop::collection::vec(ch, 0..max).prop_map(|c| c.into_iter().collect())
    }

    /// JSON number text: sign, 1–40 digits, an optional fraction and exponent.
    fn number() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            "[0-9]{1,40}",
            prop::option::of("[0-9]{1,40}"),
            prop::option::of(-60i32..60),
        )
            .prop_map(|(negative, whole, fraction, exponent)| {
                let whole = whole.trim_start_matches('0');
                let whole = if whole.is_empty() { "0" } else { whole };
                let mut n = format!("{}{whole}", if negative { "-" } else { "" });
                if let Some(f) = fraction {
                    n.push('.');
                    n.push_str(&f);
                }
                if let Some(e) = exponent {
                    n.push_str(&format!("e{e}"));
                }
                n
            })
    }

    /// Small numbers often, so that many inputs are valid.
    fn quantity() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0u32..100_000, 0u32..4).prop_map(|(n, scale)| rust_decimal::Decimal::new(n.into(), scale).to_string()),
            1 => number(),
        ]
    }

    fn body() -> impl Strategy<Value = String> {
        // Mostly short texts, so that a fair share of inputs is valid.
        let short = |max| prop_oneof![4 => text(4), 1 => text(max)];
        (
            short(140),
            prop_oneof![4 => "[a-zA-Z0-9._-]{1,64}", 1 => text(70)],
            short(270),
            quantity(),
            prop::option::of(quantity()),
            prop_oneof![4 => (1u32..65_537).prop_map(|m| m.to_string()), 1 => number()],
        )
            .prop_map(|(id, tenant, function, duration, init, memory)| {
                let mut fields = vec![
                    format!("\"id\":{}", Value::String(id)),
                    format!("\"tenant\":{}", Value::String(tenant)),
                    format!("\"function\":{}", Value::String(function)),
                    format!("\"timestamp\":\"{}\"", Utc::now().to_rfc3339()),
                    format!("\"duration_ms\":{duration}"),
                    format!("\"memory_mb\":{memory}"),
                ];
                if let Some(init) = init {
                    fields.push(format!("\"init_duration_ms\":{init}"));
                }
                format!("{{{}}}", fields.join(","))
            })
    }

    #[test]
    fn every_input_is_stored_or_gets_a_dead_letter_code() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = runtime.block_on(spawn_app_with(test_settings()));
        let store = meterd::metering::MeterStore::new(
            app.pool.clone(),
            Default::default(),
            "default".to_owned(),
        );
        let rules = meterd::metering::MeteringRules::default();
        // A fixed seed: the same 400 inputs on every run, so the share of valid ones (asserted
        // below) cannot vary from run to run.
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 400,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let (stored, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
        runner
            .run(&body(), |body| {
                match meterd::ingest::decode_message(body.as_bytes(), &rules, Utc::now()) {
                    Ok(events) => {
                        let outcome = runtime.block_on(store.record_events(&events));
                        prop_assert!(outcome.is_ok(), "{body}: {:#}", outcome.unwrap_err());
                        stored.set(stored.get() + 1);
                    }
                    Err(rejection) => {
                        prop_assert!(ErrorCode::ALL.contains(&rejection.code));
                        prop_assert!(rejection.code != ErrorCode::RejectedByDatabase);
                        prop_assert!(!rejection.reason.is_empty());
                        refused.set(refused.get() + 1);
                    }
                }
                Ok(())
            })
            .unwrap();
        let (stored, refused) = (stored.get(), refused.get());
        eprintln!("decoder property: {stored} inputs stored, {refused} refused with a code");
        assert!(
            stored >= 10 && refused >= 10,
            "{stored} stored, {refused} refused"
        );
        drop(app);
    }
}
