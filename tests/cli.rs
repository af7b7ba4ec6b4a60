//! The command line as a user meets it: help offers only what a command reads, and shell
//! completions come out of the same definition.

use std::process::{Command, Output};

fn meterd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(args)
        .env_remove("METERD_CONFIG")
        .output()
        .expect("run meterd")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[test]
fn only_commands_that_read_configuration_offer_config() {
    for offline in [
        &["price", "--help"][..],
        &["openapi", "--help"],
        &["completions", "--help"],
    ] {
        let out = meterd(offline);
        assert!(out.status.success(), "{offline:?}");
        assert!(
            !stdout(&out).contains("--config"),
            "{offline:?} offers --config it ignores"
        );
    }
    for online in [
        &["serve", "--help"][..],
        &["migrate", "--help"],
        &["finalize", "--help"],
        &["loadgen", "--help"],
        &["bench", "ingest", "--help"],
        &["dead-letters", "replay", "--help"],
    ] {
        let out = meterd(online);
        assert!(out.status.success(), "{online:?}");
        assert!(
            stdout(&out).contains("--config"),
            "{online:?} lost --config"
        );
    }
    // Offline commands refuse the option instead of ignoring it.
    let out = meterd(&["openapi", "--config", "x.toml"]);
    assert!(!out.status.success());
}

#[test]
fn completions_are_printed_for_each_shell_and_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = meterd(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        for subcommand in ["serve", "dead-letters", "completions", "price"] {
            assert!(
                script.contains(subcommand),
                "{shell} completion lacks {subcommand}"
            );
        }
    }
    let out = meterd(&["completions", "cmd.exe"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash"), "the error lists the shells: {err}");
}
