//! Finance exports (SPEC §6): streaming CSV of invoice lines, usage and per-function costs.
//!
//! Each export runs on a PostgreSQL connection of its own (not one of the API's pool, so a long
//! export never starves the API), in a task that reads rows from a cursor (`fetch`), encodes them
//! with the `csv` crate and hands chunks of about [`CHUNK_BYTES`] to the HTTP response through a
//! channel of [`CHANNEL_CHUNKS`] slots. The server therefore holds at most a few hundred KiB per
//! export, however many rows there are. When the client goes away the response body, and with
//! it the channel's receiver, is dropped: the task sees that, drops the database stream and
//! closes the connection, and PostgreSQL ends the query.
//!
//! An error before the first chunk is sent becomes an ordinary JSON error response. An error
//! after it cannot change the `200` already sent, so the body stream fails and the HTTP
//! connection is closed without the final chunk: the client sees a broken transfer, never a
//! shorter file that looks complete.

mod csv_out;
mod invoices;
mod usage;

use std::time::Duration;

use actix_web::web::Bytes;
use anyhow::Context;
use futures_util::{Stream, StreamExt, stream};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::mpsc;

pub use csv_out::{Cell, CsvEncoder, guard_formula};
pub use usage::UsageRange;

use crate::billing::period::format_period;

/// Bytes of CSV gathered before a chunk goes to the client.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait between the export task and the HTTP response.
pub const CHANNEL_CHUNKS: usize = 4;
/// How long opening the export's own database connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The export connection's `application_name`, so operators (and tests) can find it.
pub const APPLICATION_NAME: &str = "meterd-export";

/// One of the three finance exports with its validated parameters.
#[derive(Debug, Clone)]
pub enum Export {
    InvoiceLines { period: chrono::NaiveDate },
    FunctionCosts { period: chrono::NaiveDate },
    Usage(UsageRange),
}

impl Export {
    /// The header row: exactly SPEC §6's columns.
    pub fn header(&self) -> &'static [&'static str] {
        match self {
            Export::InvoiceLines { .. } => invoices::INVOICE_LINES_HEADER,
            Export::FunctionCosts { .. } => invoices::FUNCTION_COSTS_HEADER,
            Export::Usage(_) => usage::HEADER,
        }
    }

    /// The file name offered to the client, naming the period or range.
    pub fn file_name(&self) -> String {
        match self {
            Export::InvoiceLines { period } => {
                format!("invoice-lines-{}.csv", format_period(*period))
            }
            Export::FunctionCosts { period } => {
                format!("function-costs-{}.csv", format_period(*period))
            }
            Export::Usage(range) => range.file_name(),
        }
    }

    async fn write_rows(&self, conn: &mut PgConnection, out: &mut CsvOut) -> Result<(), Stop> {
        match self {
            Export::InvoiceLines { period } => {
                invoices::write_invoices(conn, *period, out, invoices::line_rows).await
            }
            Export::FunctionCosts { period } => {
                invoices::write_invoices(conn, *period, out, invoices::cost_rows).await
            }
            Export::Usage(range) => usage::write_rows(conn, range, out).await,
        }
    }
}

/// Why an export stopped before its end.
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// The client went away; nothing is wrong.
    #[error("the client disconnected")]
    Disconnected,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Failed(anyhow::Error::from(e).context("read the export's rows"))
    }
}

/// The error a body stream ends with when an export fails after its first chunk was sent.
/// The cause has been logged; the client only learns that the transfer broke.
#[derive(Debug, thiserror::Error)]
#[error("the export failed part way; the cause is in the server log")]
pub struct ExportAborted;

/// Why an export could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database cannot be reached: the client may retry.
    #[error("the database cannot be reached for an export")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Where rows go: encoded to CSV and sent on in chunks, waiting while the client is slow.
pub struct CsvOut {
    encoder: CsvEncoder,
    tx: mpsc::Sender<anyhow::Result<Bytes>>,
    rows: u64,
    chunks_sent: u64,
}

impl CsvOut {
    /// Adds one row; sends a chunk when enough bytes have gathered.
    async fn row(&mut self, cells: &[Cell<'_>]) -> Result<(), Stop> {
        self.encoder.row(cells)?;
        self.rows += 1;
        if self.encoder.buffered() >= CHUNK_BYTES {
            self.send_chunk().await?;
        }
        Ok(())
    }

    async fn send_chunk(&mut self) -> Result<(), Stop> {
        let chunk = self.encoder.take()?;
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| Stop::Disconnected)?;
        self.chunks_sent += 1;
        Ok(())
    }
}

/// A started export: its first chunk (header and first rows, or all of a small export) and
/// the rest to come.
pub struct StartedExport {
    first: Bytes,
    rest: mpsc::Receiver<anyhow::Result<Bytes>>,
}

impl StartedExport {
    /// The CSV as a body stream. Dropping it stops the export and its query.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ExportAborted>> + 'static {
        let rest = stream::unfold(self.rest, |mut rx| async move {
            match rx.recv().await? {
                Ok(chunk) => Some((Ok(chunk), rx)),
                // The task logged the cause; end the body with an error, then nothing more.
                Err(_) => {
                    rx.close();
                    Some((Err(ExportAborted), rx))
                }
            }
        });
        stream::once(async move { Ok(self.first) }).chain(rest)
    }
}

/// Opens the export's own connection, starts the export in a task and waits for its first
/// chunk, so that a failure that comes before any byte is sent is an ordinary error.
#[tracing::instrument(skip_all, fields(export = %export.file_name()))]
pub async fn start(database_url: &str, export: Export) -> Result<StartedExport, StartError> {
    let conn = connect(database_url)
        .await
        .map_err(StartError::Unavailable)?;
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(run(conn, export, tx));
    match rx.recv().await {
        Some(Ok(first)) => Ok(StartedExport { first, rest: rx }),
        Some(Err(e)) => Err(e.into()),
        None => Err(anyhow::anyhow!("the export task ended without a word").into()),
    }
}

async fn connect(database_url: &str) -> anyhow::Result<PgConnection> {
    let options = crate::db::connect_options(database_url)?.application_name(APPLICATION_NAME);
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .context("connecting to the database for an export timed out")?
        .context("connect to the database for an export")?;
    // While PostgreSQL sorts or groups it writes nothing, so it would notice a vanished
    // client only at its first row; this makes it check the socket now and then.
    if let Err(e) = conn
        .execute("SET client_connection_check_interval = '1s'")
        .await
    {
        tracing::debug!(error = %e, "client_connection_check_interval is not available");
    }
    Ok(conn)
}

/// The export task: header, rows, last chunk; or the first error, once.
async fn run(mut conn: PgConnection, export: Export, tx: mpsc::Sender<anyhow::Result<Bytes>>) {
    let started = std::time::Instant::now();
    let gone = tx.clone();
    let mut out = CsvOut {
        encoder: CsvEncoder::new(),
        tx,
        rows: 0,
        chunks_sent: 0,
    };
    let header: Vec<Cell<'_>> = export.header().iter().map(|h| Cell::Text(h)).collect();
    let result = async {
        out.encoder.row(&header)?;
        // Stop as soon as the client goes, also while the query is still sorting and no row
        // has come: dropping the row stream and then the connection ends the query.
        tokio::select! {
            biased;
            () = gone.closed() => Err(Stop::Disconnected),
            written = export.write_rows(&mut conn, &mut out) => written,
        }?;
        out.send_chunk().await
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(
                rows = out.rows,
                seconds = started.elapsed().as_secs_f64(),
                "export sent"
            );
            // A clean goodbye; the export is complete whatever this says.
            let _ = conn.close().await;
        }
        Err(Stop::Disconnected) => {
            tracing::info!(rows = out.rows, "export abandoned by the client");
            // Dropping the connection closes its socket: PostgreSQL ends the query.
            drop(conn);
        }
        Err(Stop::Failed(e)) => {
            drop(conn);
            // Before the first chunk the handler answers with an error response, which logs
            // the cause; after it only the log can say why the transfer broke.
            if out.chunks_sent > 0 {
                tracing::error!(
                    cause = format!("{e:#}"),
                    rows = out.rows,
                    "export failed part way"
                );
            }
            let _ = out.tx.send(Err(e)).await;
        }
    }
}
