//! `meterd price`: offline pricing through the real binary.

use std::process::Command;

use serde_json::{Value, json};

fn price(plan: &str, usage: &Value) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("meterd-price-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (plan_path, usage_path) = (dir.join("plan.json"), dir.join("usage.json"));
    std::fs::write(&plan_path, plan).unwrap();
    std::fs::write(&usage_path, usage.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["price", "--plan"])
        .arg(&plan_path)
        .arg("--usage")
        .arg(&usage_path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn spec_plan() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.json")).unwrap()
}

#[test]
fn the_spec_reference_cases_price_exactly() {
    // 3,000,000 × 120 ms at 1536 MB: 540,000 GB-s; × 1000 ms at 512 MB: 1,500,000 GB-s.
    for (compute, duration, expected_compute, total) in [
        ("540000", "360000", "2.33", "2.73"),
        ("1500000", "3000000", "18.33", "18.73"),
    ] {
        let usage = json!({"period": "2026-10", "usage": [{"function": "f", "arch": "x86_64",
            "requests": "3000000", "compute": compute, "duration": duration}]});
        let out = price(&spec_plan(), &usage);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value =
            serde_json::from_slice(&out.stdout).expect("stdout is only the JSON document");
        assert_eq!(doc["total"], total);
        assert_eq!(doc["currency"], "USD");
        let lines = doc["lines"].as_array().unwrap();
        assert_eq!(lines[0]["charge"], "requests");
        assert_eq!(lines[0]["amount"], "0.40");
        assert_eq!(lines[1]["charge"], "compute-x86");
        assert_eq!(lines[1]["amount"], expected_compute);
        assert_eq!(
            doc["functions"],
            json!([{"function": "f", "amount": total}])
        );
    }
}

#[test]
fn bad_files_fail_with_the_problem_named() {
    let usage = json!({"period": "2026-10", "usage": [{"function": "f", "compute": 5}]});
    let out = price(&spec_plan(), &usage);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("usage") && err.contains("compute"), "{err}");
    assert!(out.stdout.is_empty());

    let out = price(
        r#"{"name": "x", "currency": "XXX", "charges": []}"#,
        &json!({"period": "2026-10", "usage": []}),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("plan") && err.contains("currency"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args([
            "price",
            "--plan",
            "/nonexistent/plan.json",
            "--usage",
            "/nonexistent/u.json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/plan.json"));
}
