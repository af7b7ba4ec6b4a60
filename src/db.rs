//! PostgreSQL connection and migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::{
    PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connection options with the user always set: without one in the URL, PostgreSQL's
/// conventional `postgres` is used rather than whatever the driver would guess.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let options =
        PgConnectOptions::from_str(url).context("database.url is not a PostgreSQL URL")?;
    let has_user = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
        .unwrap_or(false);
    Ok(if has_user {
        options
    } else {
        options.username("postgres")
    })
}

/// Creates the database if it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url)
        .await
        .context("reach PostgreSQL")?
    {
        // A concurrent creator may win the race; that is fine.
        if let Err(e) = Postgres::create_database(url).await
            && !Postgres::database_exists(url).await.unwrap_or(false)
        {
            return Err(e).context("create the database");
        }
    }
    Ok(())
}

pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect_options(&settings.url)?))
}

/// Creates the database if needed, brings its schema up to date and seeds the `default` plan
/// (unless a plan with that id was stored before).
pub async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let pool = pool(settings)?;
    migrate_pool(settings, &pool).await?;
    Ok(pool)
}

/// [`migrate`] on a pool made before the database was reachable.
pub async fn migrate_pool(settings: &DatabaseSettings, pool: &PgPool) -> anyhow::Result<()> {
    create_database_if_missing(&settings.url).await?;
    MIGRATOR.run(pool).await.context("run migrations")?;
    crate::billing::plans::seed_default_plan(pool)
        .await
        .context("seed the default plan")?;
    Ok(())
}

/// `host:port` of the database, for messages (never the password).
pub fn address(url: &str) -> String {
    match connect_options(url) {
        Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
        Err(_) => "(an invalid database.url)".to_owned(),
    }
}
