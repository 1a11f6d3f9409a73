//! Finding the `webex-push` binary the tools drive.
//!
//! Cargo builds a package's own binaries before its integration tests, but not another
//! package's, and artifact dependencies are not stable yet. So the tests run
//! `cargo build -p webex-push` (a no-op when it is fresh) into the same target
//! directory and profile as the tool under test, unless `WEBEX_PUSH_BIN` names a binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The server binary matching `tool` (`env!("CARGO_BIN_EXE_...")`): built if needed.
pub fn server_binary(tool: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("WEBEX_PUSH_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let tool = Path::new(tool);
    let profile_dir = tool.parent().expect("the tool lives in target/<profile>/");
    let target_dir = profile_dir
        .parent()
        .expect("target/<profile>/ has a parent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "webex-push",
            "--bin",
            "webex-push",
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => panic!("cannot tell the profile of {}", tool.display()),
    }
    let status = command
        .status()
        .expect("cargo runs to build the webex-push binary");
    assert!(status.success(), "cargo build -p webex-push failed");
    let binary = tool.with_file_name("webex-push");
    assert!(binary.is_file(), "no server binary at {}", binary.display());
    binary
}
