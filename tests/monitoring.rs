//! The shipped alert rules (`monitoring/alerts.yml`) and Grafana dashboard
//! (`monitoring/grafana/meterd.json`) query only metrics that a running meterd serves: a
//! renamed metric would otherwise leave an alert silently never firing. (promtool checks the
//! rules' syntax and behaviour in `.ci/check-files.sh`.)

mod common;

use std::collections::BTreeSet;

use common::spawn_app;

/// Every `meterd_…` metric name in a text (rule expressions, dashboard queries).
fn queried_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meterd_") {
        let preceded_by_name_char = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !preceded_by_name_char {
            names.insert(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

/// The sample names of a text exposition (`name{labels} value` or `name value`).
fn exposed_metrics(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .expect("a sample line starts with its name")
                .to_owned()
        })
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn names_are_found_in_queries() {
    let names = queried_metrics(
        r#"histogram_quantile(0.99, sum by (le) (rate(meterd_batch_commit_seconds_bucket[5m])))
           / sum(meterd_consumer_connected{job!~".*-api"}) and queue="meterd.usage.events""#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "meterd_batch_commit_seconds_bucket",
            "meterd_consumer_connected"
        ]
    );
}

#[tokio::test]
async fn alerts_and_dashboard_query_only_metrics_meterd_serves() {
    let app = spawn_app().await;
    // The HTTP series appear with the first request.
    let health = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let exposition = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed = exposed_metrics(&exposition);

    for file in ["monitoring/alerts.yml", "monitoring/grafana/meterd.json"] {
        let queried = queried_metrics(&read(file));
        assert!(queried.len() >= 5, "{file} queries {queried:?}");
        let missing: Vec<_> = queried.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} queries metrics /metrics does not serve: {missing:?}\nserved: {exposed:?}"
        );
    }
}
