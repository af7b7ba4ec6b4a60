//! The reference in `docs/` stays true to the code: every API operation and configuration key
//! is documented, every worked pricing example prices to its stated totals, and relative
//! links between the documents point at files that exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_openapi_operation_has_a_section_in_api_md() {
    let openapi: Value = serde_json::from_str(&read("openapi.json")).unwrap();
    let api_md = read("docs/api.md");
    let mut missing = Vec::new();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let heading = format!("### `{} {path}`", method.to_uppercase());
            if !api_md.lines().any(|line| line.trim_end() == heading) {
                missing.push(heading);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api.md lacks a section (with a curl example per role) for:\n{}",
        missing.join("\n")
    );
}

/// `section.key` for every key of a TOML file of plain `[section]` tables.
fn toml_keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').trim_matches('[').to_owned();
        } else if let Some((key, _)) = line.split_once('=') {
            keys.push(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

#[test]
fn every_configuration_key_is_in_operations_md() {
    let keys = toml_keys(&read("config/default.toml"));
    assert!(keys.contains(&"http.addr".to_owned()), "parsed: {keys:?}");
    let operations = read("docs/operations.md");
    let missing: Vec<_> = keys
        .iter()
        .filter(|key| !operations.contains(&format!("| `{key}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md's configuration table lacks: {missing:?}"
    );
}

fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("docs/examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn worked_examples_price_to_their_expected_totals() {
    let dirs = example_dirs();
    assert!(dirs.len() >= 5, "one example per pricing model at least");
    let plans_md = read("docs/plans.md");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            plans_md.contains(&format!("](examples/{name}/)")),
            "docs/plans.md does not present docs/examples/{name}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .arg("price")
            .arg("--plan")
            .arg(dir.join("plan.json"))
            .arg("--usage")
            .arg(dir.join("usage.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let priced: Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        assert_eq!(priced["total"], expected["total"], "{name}: total");
        let lines = priced["lines"].as_array().unwrap();
        let want = expected["lines"].as_array().unwrap();
        assert_eq!(lines.len(), want.len(), "{name}: lines {lines:#?}");
        for (line, want) in lines.iter().zip(want) {
            for (field, value) in want.as_object().unwrap() {
                assert_eq!(&line[field], value, "{name}: line {line:#}, field {field}");
            }
        }
        // A function breakdown that sums to the total is part of every priced invoice.
        assert!(priced["functions"].is_array(), "{name}: functions");
    }
}

/// Relative link targets (`](path)` or `](path#anchor)`) of a Markdown file.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .filter(|target| !target.contains("://") && !target.starts_with('#'))
        .map(|target| target.split('#').next().unwrap().to_owned())
        .collect()
}

#[test]
fn links_between_the_documents_resolve() {
    let mut files = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path.strip_prefix(root()).unwrap().to_owned());
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = read(file.to_str().unwrap());
        let base = root().join(file).parent().unwrap().to_owned();
        for target in relative_links(&text) {
            if !base.join(&target).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
}

#[test]
fn the_readme_cites_no_specification_users_do_not_have() {
    let readme = read("README.md");
    assert!(!readme.contains("SPEC"), "README.md cites the SPEC");
    for doc in [
        "events",
        "metering",
        "plans",
        "invoices",
        "api",
        "exports",
        "operations",
    ] {
        assert!(
            readme.contains(&format!("](docs/{doc}.md)")),
            "README.md does not link docs/{doc}.md"
        );
    }
}

/// The value after `prefix` up to the first character that cannot be in a key.
fn key_after(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not found"))
        + prefix.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[test]
fn compose_and_the_readme_curls_use_the_same_admin_key() {
    let readme_key = key_after(&read("README.md"), "KEY=");
    let compose_key = key_after(
        &read("docker-compose.yml"),
        "METERD__AUTH__ADMIN_KEY: ${METERD_ADMIN_KEY:-",
    );
    let default_key = key_after(&read("config/default.toml"), "admin_key = \"");
    assert_eq!(readme_key, compose_key, "README.md's curls against compose");
    assert_eq!(
        readme_key, default_key,
        "README.md's curls against a local serve"
    );
    assert_eq!(key_after(&read("docs/api.md"), "ADMIN="), readme_key);
}
