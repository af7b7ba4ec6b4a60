//! `/docs`: the OpenAPI document as a page a browser renders from assets in the binary,
//! under a content security policy that allows this origin only.

mod common;

use std::process::Stdio;

use common::spawn_app;

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary_under_a_strict_policy() {
    let mut app = spawn_app().await;
    for (path, content_type) in [
        ("/docs", "text/html"),
        ("/docs/docs.js", "text/javascript"),
        ("/docs/docs.css", "text/css"),
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        let policy = header("content-security-policy");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    app.stop().await;
}

/// Headless Chromium loads the page, runs its script and renders every operation of the
/// served document.
#[tokio::test]
async fn a_browser_renders_every_operation_of_the_document() {
    let mut app = spawn_app().await;
    let (_, document) = app.get("/openapi.json", None).await;
    let profile = std::env::temp_dir().join(format!("meterd-docs-{}", uuid::Uuid::new_v4()));
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{}/docs", app.base_url))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .expect("chromium runs (apt-get install chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {:?}",
        output.status
    );
    let dom = String::from_utf8(output.stdout).expect("UTF-8 DOM");
    assert!(!dom.contains("Could not load"), "{dom}");
    assert!(dom.contains(&format!("meterd API {}", env!("CARGO_PKG_VERSION"))));
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(
                dom.contains(&format!("id=\"{id}\"")),
                "{method} {path} ({id}) is not on the page"
            );
            operations += 1;
        }
    }
    assert!(
        operations > 10,
        "the document lists the API ({operations} operations)"
    );
    app.stop().await;
}
