//! Records the git commit the binary is built from, for `--version`:
//! `POSTBACK_GIT_COMMIT` when the build sets it (a container build without
//! `.git`), else `git rev-parse`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=POSTBACK_GIT_COMMIT");
    let commit = std::env::var("POSTBACK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            // Built again when HEAD moves (a worktree's HEAD and refs live
            // in different directories: ask git for both paths).
            // A path that does not exist would rerun this at every build.
            let head = git(&["symbolic-ref", "-q", "HEAD"]);
            for path in ["HEAD", "packed-refs"].into_iter().chain(head.as_deref()) {
                match git(&["rev-parse", "--git-path", path]) {
                    Some(p) if std::path::Path::new(&p).exists() => {
                        println!("cargo:rerun-if-changed={p}")
                    }
                    _ => {}
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=POSTBACK_GIT_COMMIT={commit}");
}
