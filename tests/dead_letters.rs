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
