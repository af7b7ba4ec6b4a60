//! Starting meterd: the HTTP server and the consumer as sibling tasks on one runtime,
//! stopped together by one cancellation token.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, auth::hash_key};
use crate::billing::store::{BillingConfig, finalize_due};
use crate::config::{DEV_ADMIN_KEY, Settings};
use crate::ingest::{consumer::Backoff, run_consumer};
use crate::metering::{MeterStore, retention, rollup};
use crate::metrics::Metrics;

/// Which parts of meterd a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// API, consumer and finalizer.
    All,
    /// The REST API only.
    Api,
    /// The AMQP consumer only (plus health, readiness and metrics).
    Consumer,
}

/// A started meterd.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub pool: sqlx::PgPool,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningApp {
    /// Stops taking work and waits for in-flight work to finish or be abandoned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Asks every task to stop, without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every task has ended (after the shutdown token is cancelled).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the HTTP address and serves health, readiness and metrics at once, then migrates the
/// database (retrying while it is unreachable) and starts the tasks of `role`. Returns once
/// they run, or once `shutdown` is cancelled while waiting (only the stopping server then).
pub async fn start(
    settings: Settings,
    role: ServeRole,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningApp> {
    if settings.auth.admin_key == DEV_ADMIN_KEY {
        tracing::warn!(
            "!!! auth.admin_key is the development key {DEV_ADMIN_KEY:?}: anyone can administer this meterd. Set METERD__AUTH__ADMIN_KEY !!!"
        );
    }
    // The pool connects lazily: the server listens first, so health, readiness (503) and
    // metrics answer while the database is still being waited for.
    let pool = crate::db::pool(&settings.database)?;
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(MeterStore::new(
        pool.clone(),
        settings.metering.clone(),
        settings.billing.default_plan.clone(),
    ));
    let runs_consumer = matches!(role, ServeRole::All | ServeRole::Consumer);
    let listener = TcpListener::bind(&settings.http.addr)
        .with_context(|| format!("bind http.addr {}", settings.http.addr))?;
    let addr = listener.local_addr()?;
    let state = web::Data::new(AppState {
        admin_key_hash: hash_key(&settings.auth.admin_key),
        billing: BillingConfig::from_settings(&settings),
        drafts: Default::default(),
        settings: settings.clone(),
        pool: pool.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        runs_consumer,
        database_ready: AtomicBool::new(false),
        ingest_budget: api::IngestBudget::new(settings.http.ingest_buffer_bytes),
    });
    let server = api::server(listener, state.clone(), role != ServeRole::Consumer)?;
    let handle = server.handle();
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })];
    let stop_http = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        stop_http.cancelled().await;
        handle.stop(true).await;
    }));
    tracing::info!(%addr, ?role, "listening; waiting for the database");
    let running = |tasks| RunningApp {
        addr,
        metrics: metrics.clone(),
        pool: pool.clone(),
        shutdown: shutdown.clone(),
        tasks,
    };
    if !migrate_with_retry(&settings, &pool, &shutdown).await? {
        // Stopped while waiting: only the HTTP server is running, and it is stopping.
        return Ok(running(tasks));
    }
    state.database_ready.store(true, Ordering::Release);
    if role != ServeRole::Consumer && settings.billing.auto_finalize {
        let (pool, config, metrics) = (
            pool.clone(),
            BillingConfig::from_settings(&settings),
            metrics.clone(),
        );
        let interval = Duration::from_secs(settings.billing.finalize_interval_secs);
        tasks.push(tokio::spawn(run_every(
            "invoices finalized",
            interval,
            shutdown.clone(),
            move || {
                let (pool, config, metrics) = (pool.clone(), config.clone(), metrics.clone());
                async move {
                    let created = finalize_due(&pool, &config, chrono::Utc::now()).await?;
                    metrics.invoices_finalized.inc_by(created);
                    Ok(created)
                }
            },
        )));
    }
    // Every role rolls up and prunes: both are safe to run concurrently, and cheap when there
    // is nothing to do.
    let rollup_pool = pool.clone();
    tasks.push(tokio::spawn(run_every(
        "hourly rows rolled up into usage_monthly",
        rollup::ROLLUP_INTERVAL,
        shutdown.clone(),
        move || {
            let pool = rollup_pool.clone();
            async move { rollup::roll_up_due(&pool).await }
        },
    )));
    let (prune_pool, max_age) = (pool.clone(), settings.metering.max_event_age_days);
    tasks.push(tokio::spawn(run_every(
        "ledger rows pruned",
        retention::PRUNE_INTERVAL,
        shutdown.clone(),
        move || {
            let pool = prune_pool.clone();
            async move { retention::prune_ledger(&pool, max_age).await }
        },
    )));
    if runs_consumer {
        tasks.push(tokio::spawn(run_consumer(
            settings.amqp.clone(),
            store,
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    tracing::info!(%addr, ?role, "meterd started");
    Ok(running(tasks))
}

/// Creates and migrates the database, retrying while it is unreachable; false if shut down
/// first. A problem is logged when it starts or changes, not at every attempt.
async fn migrate_with_retry(
    settings: &Settings,
    pool: &sqlx::PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let address = crate::db::address(&settings.database.url);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut problem: Option<String> = None;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            attempt = crate::db::migrate_pool(&settings.database, pool) => attempt,
        };
        match attempt {
            Ok(()) => {
                if problem.is_some() {
                    tracing::info!("the database at {address} answers; schema up to date");
                }
                return Ok(true);
            }
            // Waiting cannot mend a database whose applied migrations differ from this
            // build's: stop and say so.
            Err(e) if schema_conflict(&e) => {
                shutdown.cancel();
                return Err(e.context("the database's schema does not match this meterd"));
            }
            Err(e) => {
                let now = format!("{e:#}");
                if problem.as_deref() != Some(now.as_str()) {
                    tracing::warn!(
                        error = %now,
                        "cannot use the database at {address}; retrying until it answers"
                    );
                    problem = Some(now);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A migration history this build cannot continue (a migration changed or missing, a
/// failed one left dirty): not an outage to wait out.
fn schema_conflict(error: &anyhow::Error) -> bool {
    use sqlx::migrate::MigrateError;
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<MigrateError>(),
            Some(
                MigrateError::VersionMismatch(_)
                    | MigrateError::VersionMissing(_)
                    | MigrateError::Dirty(_)
                    | MigrateError::VersionTooOld(..)
                    | MigrateError::VersionTooNew(..)
            )
        )
    })
}

/// Runs `job` now and then every `interval` until shutdown; `job` returns how many `what` it
/// did, logged when not zero. A failed run is logged and tried again at the next tick: every
/// periodic job is idempotent.
async fn run_every<F, Fut>(
    what: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    loop {
        match job().await {
            Ok(0) => {}
            Ok(done) => tracing::info!(done, "{what}"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "periodic task failed ({what}); will retry"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
