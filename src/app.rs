//! Starting meterd: the HTTP server and the consumer as sibling tasks on one runtime,
//! stopped together by one cancellation token.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, auth::hash_key};
use crate::billing::store::{BillingConfig, run_finalizer};
use crate::config::{DEV_ADMIN_KEY, Settings};
use crate::ingest::{consumer::Backoff, run_consumer};
use crate::metering::MeterStore;
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

/// Migrates the database (retrying while it is unreachable), binds the HTTP address and
/// starts the tasks of `role`.
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
    let pool = migrate_with_retry(&settings, &shutdown).await?;
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
    });
    let server = api::server(listener, state, role != ServeRole::Consumer)?;
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
    if role != ServeRole::Consumer && settings.billing.auto_finalize {
        tasks.push(tokio::spawn(run_finalizer(
            pool.clone(),
            BillingConfig::from_settings(&settings),
            metrics.clone(),
            Duration::from_secs(settings.billing.finalize_interval_secs),
            shutdown.clone(),
        )));
    }
    // Every role rolls up: the roll-up is serialized in the database and a no-op when not due.
    tasks.push(tokio::spawn(crate::metering::rollup::run_rollup(
        pool.clone(),
        shutdown.clone(),
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
    Ok(RunningApp {
        addr,
        metrics,
        pool,
        shutdown,
        tasks,
    })
}

async fn migrate_with_retry(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<sqlx::PgPool> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match crate::db::migrate(&settings.database).await {
            Ok(pool) => return Ok(pool),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "database not ready; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}
