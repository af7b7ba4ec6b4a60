//! How meterd reaches its servers: TLS to PostgreSQL (`sslmode`) and RabbitMQ (`amqps://`)
//! through TLS-terminating proxies with certificates made here, and quorum queues.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{spawn_app_with, test_settings};
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use meterd::config::{DatabaseSettings, QueueType};
use serde_json::json;
use sqlx::{Connection as _, Executor as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// A certificate authority made for one test, and a server certificate it signed for
/// `localhost`.
struct TestPki {
    ca_file: tempfile_path::TempPath,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

mod tempfile_path {
    /// A file under the system temp directory, removed on drop.
    pub struct TempPath(pub std::path::PathBuf);

    impl TempPath {
        pub fn with_contents(contents: &str) -> TempPath {
            let path =
                std::env::temp_dir().join(format!("meterd-test-{}.pem", uuid::Uuid::new_v4()));
            std::fs::write(&path, contents).unwrap();
            TempPath(path)
        }

        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn make_ca() -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meterd test CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn make_pki() -> TestPki {
    let (ca_params, ca_key, ca_pem) = make_ca();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    TestPki {
        ca_file: tempfile_path::TempPath::with_contents(&ca_pem),
        server_cert: server.der().clone(),
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
    }
}

/// A TLS-terminating proxy in front of a plaintext server on 127.0.0.1. For PostgreSQL,
/// whose TLS starts inside its protocol, it first answers the client's SSLRequest with `S`.
/// Counts the TLS handshakes that completed.
struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn tls_proxy(pki: &TestPki, upstream: u16, postgres: bool) -> TlsProxy {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![pki.server_cert.clone()],
        PrivateKeyDer::Pkcs8(pki.server_key.clone_key()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                if postgres {
                    let mut request = [0u8; 8];
                    client.read_exact(&mut request).await?;
                    if request != SSL_REQUEST {
                        return Ok(()); // this proxy speaks TLS only
                    }
                    client.write_all(b"S").await?;
                }
                let mut tls = acceptor.accept(client).await?;
                counted.fetch_add(1, Ordering::SeqCst);
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
                tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    TlsProxy { addr, handshakes }
}

fn database_name() -> String {
    format!("meterd_test_{}", uuid::Uuid::new_v4().simple())
}

async fn drop_database(name: &str) {
    let mut conn = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .await
    .unwrap();
}

async fn migrate_over(url: String) -> anyhow::Result<sqlx::PgPool> {
    let pool = meterd::db::migrate(&DatabaseSettings {
        url,
        max_connections: 2,
    })
    .await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
    anyhow::ensure!(one == 1);
    Ok(pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_ca_and_the_host_name() {
    let pki = make_pki();
    let proxy = tls_proxy(&pki, 5432, true).await;
    let port = proxy.addr.port();
    let name = database_name();
    let ca = pki.ca_file.as_str();

    let url =
        format!("postgres://postgres@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={ca}");
    let pool = migrate_over(url)
        .await
        .expect("verify-full with the test CA");
    pool.close().await;
    assert!(proxy.handshakes.load(Ordering::SeqCst) > 0);

    let (_, _, other_ca) = make_ca();
    let other_ca = tempfile_path::TempPath::with_contents(&other_ca);
    let url = format!(
        "postgres://postgres@localhost:{port}/{name}?sslmode=verify-full&sslrootcert={}",
        other_ca.as_str()
    );
    let err = migrate_over(url).await.expect_err("another CA is refused");
    let err = format!("{err:#}");
    assert!(err.contains("certificate"), "{err}");

    // The certificate names localhost, not 127.0.0.1.
    let url =
        format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=verify-full&sslrootcert={ca}");
    let err = migrate_over(url)
        .await
        .expect_err("another host name is refused");
    let err = format!("{err:#}");
    assert!(err.contains("certificate") && err.contains("name"), "{err}");

    // require encrypts without checking whose certificate it is.
    let handshakes = proxy.handshakes.load(Ordering::SeqCst);
    let url = format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=require");
    migrate_over(url).await.expect("require").close().await;
    assert!(proxy.handshakes.load(Ordering::SeqCst) > handshakes);
    drop_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_test_ca_meters_events_and_another_ca_is_refused() {
    let pki = make_pki();
    let proxy = tls_proxy(&pki, 5672, false).await;
    let mut settings = test_settings();
    let plain_url = settings.amqp.url.clone();
    settings.amqp.url = format!("amqps://guest:guest@localhost:{}/%2f", proxy.addr.port());
    settings.amqp.tls_ca_file = Some(pki.ca_file.as_str().to_owned());
    let mut app = spawn_app_with(settings.clone()).await;
    let ts = Utc::now().to_rfc3339();
    app.publish_json(&json!({"id": "tls-1", "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": 10, "memory_mb": 128}))
        .await;
    app.wait_for_requests(1).await;
    assert!(
        proxy.handshakes.load(Ordering::SeqCst) >= 2,
        "consumer and publisher"
    );

    let (_, _, other_ca) = make_ca();
    let other_ca = tempfile_path::TempPath::with_contents(&other_ca);
    let mut wrong = settings.amqp.clone();
    wrong.tls_ca_file = Some(other_ca.as_str().to_owned());
    let err = meterd::ingest::topology::connect(&wrong, "meterd-test-wrong-ca")
        .await
        .expect_err("another CA is refused");
    let err = format!("{err:#}");
    assert!(err.contains("certificate"), "{err}");
    let mut wrong = settings.amqp.clone();
    wrong.url = format!("amqps://guest:guest@127.0.0.1:{}/%2f", proxy.addr.port());
    let err = meterd::ingest::topology::connect(&wrong, "meterd-test-wrong-name")
        .await
        .expect_err("another host name is refused");
    let err = format!("{err:#}");
    assert!(err.contains("certificate"), "{err}");
    assert!(
        !err.contains("guest:guest"),
        "the password stays out: {err}"
    );

    // Clean up over the plain port: the proxy belongs to this test's runtime.
    app.settings.amqp.url = plain_url;
    app.settings.amqp.tls_ca_file = None;
}

fn quorum_settings() -> meterd::config::Settings {
    let mut settings = test_settings();
    settings.amqp.queue_type = QueueType::Quorum;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_meters_events_and_dead_letters_poison() {
    let app = spawn_app_with(quorum_settings()).await;
    let ts = Utc::now().to_rfc3339();
    let e = |id: &str| json!({"id": id, "tenant": "acme", "function": "f", "timestamp": ts, "duration_ms": 10, "memory_mb": 128});
    app.publish_json(&json!([e("q-1"), e("q-2")])).await;
    app.publish(b"{not json").await;
    app.publish_json(&e("q-3")).await;
    app.wait_for_requests(3).await;
    let dead = app.dead_letters(1).await;
    assert_eq!(dead[0].code, "invalid_json");

    let channel = app_channel(&app.settings.amqp).await;
    let declared = channel
        .queue_declare(
            app.settings.amqp.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue exists");
    assert_eq!(declared.message_count(), 0);
}

async fn app_channel(amqp: &meterd::config::AmqpSettings) -> lapin::Channel {
    meterd::ingest::topology::connect(amqp, "meterd-test-quorum")
        .await
        .unwrap()
        .create_channel()
        .await
        .unwrap()
}

/// A message that is never acked (it kept bringing a consumer down) is dead-lettered by the
/// broker after `amqp.delivery_limit` deliveries, instead of coming back for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_dead_letters_a_message_past_its_delivery_limit() {
    let mut settings = quorum_settings();
    settings.amqp.delivery_limit = 2;
    let channel = app_channel(&settings.amqp).await;
    meterd::ingest::topology::declare(&channel, &settings.amqp)
        .await
        .unwrap();
    channel
        .basic_publish(
            settings.amqp.exchange.as_str().into(),
            "usage.test".into(),
            BasicPublishOptions::default(),
            b"crashes the consumer",
            meterd::ingest::topology::usage_message_properties(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let deadline = Instant::now() + common::DEADLINE;
    let mut deliveries = 0;
    let dead = loop {
        assert!(Instant::now() < deadline, "never dead-lettered");
        if let Some(dead) = channel
            .basic_get(
                settings.amqp.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            break dead;
        }
        match channel
            .basic_get(
                settings.amqp.queue.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            Some(message) => {
                deliveries += 1;
                message
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(dead.delivery.data, b"crashes the consumer");
    assert!(deliveries > 2, "{deliveries} deliveries");
    common::cleanup(&settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_another_type_is_an_error_naming_the_queue_and_both_types() {
    for (first, then) in [
        (QueueType::Classic, QueueType::Quorum),
        (QueueType::Quorum, QueueType::Classic),
    ] {
        let mut settings = test_settings();
        settings.amqp.queue_type = first;
        let channel = app_channel(&settings.amqp).await;
        meterd::ingest::topology::declare(&channel, &settings.amqp)
            .await
            .unwrap();
        let mut other = settings.amqp.clone();
        other.queue_type = then;
        let channel = app_channel(&settings.amqp).await;
        let err = meterd::ingest::topology::declare(&channel, &other)
            .await
            .expect_err("a queue is not redeclared with another type");
        let err = format!("{err:#}");
        let expected = format!(
            "queue {} exists as a {} queue, but amqp.queue_type is {}",
            settings.amqp.queue,
            first.as_str(),
            then.as_str()
        );
        assert!(err.contains(&expected), "{err}");
        common::cleanup(&settings).await;
    }
}
