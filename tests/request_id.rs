//! Every HTTP response carries `x-request-id`: the caller's own when it is plain, a fresh
//! one otherwise, on successes and on every kind of error alike.

mod common;

use common::spawn_app;

async fn request_id(app: &common::TestApp, path: &str, sent: Option<&str>) -> (u16, String) {
    let mut req = app.http.get(format!("{}{path}", app.base_url));
    if let Some(sent) = sent {
        req = req.header("x-request-id", sent);
    }
    let res = req.send().await.expect("GET");
    let id = res
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {path}"))
        .to_str()
        .expect("ASCII id")
        .to_owned();
    (res.status().as_u16(), id)
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_plain_one_from_the_caller_is_kept() {
    let mut app = spawn_app().await;

    let (status, first) = request_id(&app, "/healthz", None).await;
    assert_eq!(status, 200);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first:?}");
    let (_, second) = request_id(&app, "/healthz", None).await;
    assert_ne!(first, second, "each request gets its own id");

    // Errors too: unauthenticated, unknown route.
    let (status, id) = request_id(&app, "/v1/tenants", None).await;
    assert_eq!(status, 401);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let (status, id) = request_id(&app, "/no/such/route", Some("trace-42.a_b")).await;
    assert_eq!(status, 404);
    assert_eq!(id, "trace-42.a_b", "a plain caller id is kept");

    // Ids that are too long or hold characters unfit for logs are replaced.
    for hostile in ["x".repeat(65), "a b".to_owned(), "id\"quoted".to_owned()] {
        let (_, id) = request_id(&app, "/healthz", Some(&hostile)).await;
        assert_ne!(id, hostile);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?}");
    }
    app.stop().await;
}
