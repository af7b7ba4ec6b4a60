//! What the binary writes when its output is a pipe: no panic when the reader goes away, no
//! colour escapes in logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const METERD: &str = env!("CARGO_BIN_EXE_meterd");

#[test]
fn a_closed_stdout_ends_meterd_openapi_quietly() {
    // `meterd openapi | head -c 0`: the reader is gone before the first byte is written.
    let mut child = Command::new(METERD)
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meterd");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("meterd ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn pretty_logs_into_a_pipe_carry_no_colour_escapes() {
    // The development admin key draws a warning as soon as serve starts; the unreachable
    // database keeps it retrying, so the child is stopped once the first line has arrived.
    let mut child = Command::new(METERD)
        .arg("serve")
        .env("METERD__LOG__FORMAT", "pretty")
        .env(
            "METERD__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("METERD__HTTP__ADDR", "127.0.0.1:0")
        .env_remove("METERD__AUTH__ADMIN_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meterd");
    let mut line = Vec::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_until(b'\n', &mut line)
        .expect("read the log");
    child.kill().ok();
    child.wait().ok();
    let line = String::from_utf8_lossy(&line);
    assert!(line.contains("WARN"), "{line}");
    assert!(!line.contains('\u{1b}'), "escape bytes in {line:?}");
}
