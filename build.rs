//! Build script: names the commit the gateway is built from, as `AGENTICAI_WS_COMMIT`, for the
//! `agenticai_ws_build_info` gauge (src/metrics.rs).
//!
//! `GIT_COMMIT` wins when set: the Docker build context has no `.git` (.dockerignore), so the
//! Dockerfile takes it as a build argument (scripts/ops/deploy.sh passes the revision it tags the
//! image with). Otherwise `git rev-parse`, and `unknown` outside a repository (a source tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let commit = std::env::var("GIT_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .or_else(commit_from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=AGENTICAI_WS_COMMIT={commit}");
}

/// The checked-out commit, abbreviated as deploy.sh tags images (12 digits), and the files whose
/// change means another commit is checked out, so that Cargo runs this script again.
fn commit_from_git() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD moves with a checkout (or a commit on a detached HEAD), the branch's ref with a commit,
    // packed-refs when git packs that ref. A path that does not exist is left out: Cargo would
    // run the script on every build.
    let branch_ref = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch_ref.as_deref()) {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some(commit)
}

/// A git command's trimmed output, or None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
