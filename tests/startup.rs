//! Start-up and configuration (issue 12, item 14), against the real binary: bad settings fail
//! at once naming the key; health, readiness and metrics answer while the database is awaited;
//! a signal while waiting exits cleanly.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{DEADLINE, test_settings};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `meterd` with nothing from this environment that could point it elsewhere.
fn meterd(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterd"));
    for (name, _) in std::env::vars_os() {
        let name_lossy = name.to_string_lossy();
        if name_lossy.starts_with("METERD")
            || name_lossy == "DATABASE_URL"
            || name_lossy == "AMQP_URL"
        {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `meterd serve` expecting it to refuse to start: its stderr.
async fn refused(env: &[(&str, &str)], config: Option<&str>) -> String {
    let mut command = meterd(&["serve"]);
    command.env("METERD__HTTP__ADDR", "127.0.0.1:0");
    for (name, value) in env {
        command.env(name, value);
    }
    let file = config.map(|text| {
        let path = std::env::temp_dir().join(format!("meterd-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        path
    });
    if let Some(path) = &file {
        command.arg("--config").arg(path);
    }
    let started = Instant::now();
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("meterd should refuse to start at once")
        .expect("run meterd");
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    stderr
}

#[tokio::test]
async fn an_unknown_key_is_an_error_naming_it() {
    let stderr = refused(&[("METERD__HTTP__ADRR", "0.0.0.0:1")], None).await;
    assert!(
        stderr.contains("METERD__HTTP__ADRR") && stderr.contains("http.adrr"),
        "{stderr}"
    );
    assert!(
        stderr.contains("addr"),
        "the known key is suggested: {stderr}"
    );

    let stderr = refused(&[], Some("[metering]\nmax_event_age = 30\n")).await;
    assert!(stderr.contains("metering.max_event_age"), "{stderr}");
    let stderr = refused(&[], Some("[htp]\naddr = \"127.0.0.1:1\"\n")).await;
    assert!(stderr.contains("htp"), "{stderr}");
}

#[tokio::test]
async fn values_are_checked_at_start_and_the_error_says_what_is_allowed() {
    for value in ["0", "-1", "ninety", "1.5"] {
        let stderr = refused(&[("METERD__METERING__MAX_EVENT_AGE_DAYS", value)], None).await;
        assert!(
            stderr.contains("metering.max_event_age_days")
                && stderr.contains("METERD__METERING__MAX_EVENT_AGE_DAYS")
                && stderr.contains("a whole number from 1 to"),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains("invalid type"), "{value}: {stderr}");
    }
    let stderr = refused(&[], Some("[metering]\nmax_event_age_days = -1\n")).await;
    assert!(
        stderr.contains("metering.max_event_age_days") && stderr.contains("from 1 to"),
        "{stderr}"
    );
    let stderr = refused(&[("METERD__LOG__FORMAT", "yaml")], None).await;
    assert!(stderr.contains("log.format"), "{stderr}");
    let stderr = refused(&[("METERD__HTTP__ADDR", "localhost")], None).await;
    assert!(stderr.contains("http.addr"), "{stderr}");
}

#[tokio::test]
async fn a_malformed_url_fails_at_once() {
    let stderr = refused(&[("DATABASE_URL", "notaurl")], None).await;
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("not a PostgreSQL URL"),
        "{stderr}"
    );
    let stderr = refused(&[("AMQP_URL", "notaurl")], None).await;
    assert!(
        stderr.contains("AMQP_URL") && stderr.contains("not an AMQP URL"),
        "{stderr}"
    );
}

/// A `meterd serve` child on port 0; its stderr (JSON log lines) is kept.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(role: &str, env: &[(&str, String)]) -> Server {
        let mut command = meterd(&["serve", "--role", role]);
        command
            .env("METERD__HTTP__ADDR", "127.0.0.1:0")
            .env("METERD__LOG__FORMAT", "json")
            .env("METERD__AUTH__ADMIN_KEY", "startup-test-admin")
            .env("RUST_LOG", "info,sqlx=warn,lapin=off,amq_protocol=off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start meterd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        Server { child, log }
    }

    fn lines_with(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(text)).cloned().collect()
    }

    /// The address from the "listening" log line.
    async fn base_url(&self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.lines_with("\"listening").first() {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                return format!("http://{}", line["fields"]["addr"].as_str().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "never listened: {:?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn status(url: &str) -> (u16, String) {
    let res = reqwest::get(url).await.expect("request");
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_serves_health_before_the_database_answers_and_stops_cleanly_while_waiting() {
    let port = closed_port();
    let mut server = Server::start(
        "all",
        &[(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/meterd"),
        )],
    );
    let base = server.base_url().await;
    assert_eq!(status(&format!("{base}/healthz")).await.0, 200);
    let (code, body) = status(&format!("{base}/readyz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    assert_eq!(status(&format!("{base}/metrics")).await.0, 200);
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/tenants"))
        .bearer_auth("startup-test-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);

    // Retries go on (200 ms, 400 ms, 800 ms, … apart), but the problem is logged once, with
    // the address.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let warnings = server.lines_with("cannot use the database");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{port}")),
        "{warnings:?}"
    );

    let pid = server.child.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(5), server.child.wait())
        .await
        .expect("meterd exits within 5 s of SIGINT while waiting for the database")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{:?}", server.log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_role_is_ready_without_a_broker() {
    let settings = test_settings();
    let port = closed_port();
    let mut server = Server::start(
        "api",
        &[
            ("DATABASE_URL", settings.database.url.clone()),
            (
                "AMQP_URL",
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ),
        ],
    );
    let base = server.base_url().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, body) = status(&format!("{base}/readyz")).await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = server.child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("meterd stops")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    common::cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_logged_once_with_its_address() {
    let settings = test_settings();
    let port = closed_port();
    let mut server = Server::start(
        "consumer",
        &[
            ("DATABASE_URL", settings.database.url.clone()),
            (
                "AMQP_URL",
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ),
        ],
    );
    let base = server.base_url().await;
    let deadline = Instant::now() + DEADLINE;
    while server.lines_with("meterd started").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = status(&format!("{base}/readyz")).await;
    assert_eq!(code, 503, "{body}");
    // Reconnection is tried at 100 ms, 200 ms, 400 ms, … but the problem is logged once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let warnings = server.lines_with("reconnecting until it answers");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{port}")),
        "{warnings:?}"
    );
    let pid = server.child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("meterd stops")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    common::cleanup(&settings).await;
}

/// A database whose applied migrations differ from this build's cannot be mended by waiting:
/// `serve` stops at once with exit code 1, saying so, instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_differently_stops_start_up() {
    use sqlx::Connection;
    let settings = test_settings();
    meterd::db::migrate(&settings.database)
        .await
        .expect("migrate");
    let mut conn = sqlx::PgConnection::connect(&settings.database.url)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea \
         WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let mut command = meterd(&["serve", "--role", "api"]);
    command.env("METERD__HTTP__ADDR", "127.0.0.1:0");
    command.env("METERD__DATABASE__URL", &settings.database.url);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("meterd should stop at once, not wait for ever")
        .expect("run meterd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");
    common::cleanup(&settings).await;
}
