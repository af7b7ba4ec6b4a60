//! `/docs`: the OpenAPI document as a browsable page. The page, its script and its style are
//! compiled into the binary (no CDN, nothing fetched at build time): the script reads
//! `/openapi.json` and writes every text of it as text, and the content security policy lets
//! the page load only from this origin.

use actix_web::HttpResponse;

const INDEX: &str = include_str!("docs_page/index.html");
const SCRIPT: &str = include_str!("docs_page/docs.js");
const STYLE: &str = include_str!("docs_page/docs.css");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("content-security-policy", CONTENT_SECURITY_POLICY))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header(("cache-control", "no-cache"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}
