//! The spool directory belongs to one process: a second gateway on the same
//! `SPOOL_DIR` refuses to start and says why, and what the spool holds
//! (client addresses, user agents, tokens) is readable by its owner only, in
//! a directory the gateway makes its owner's alone and never chmod-s when it exists.
use crate::common;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::process::GatewayProcess;

/// The permission bits of `p`.
fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file in the spool directory `dir` is its owner's alone, and there
/// are a segment and the lock file at least.
fn files_are_private(dir: &std::path::Path) {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert!(files >= 2, "a segment and the lock file");
}

/// Runs the gateway on the spool directory `dir` until it exits.
fn start_on(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .env_clear()
        .env("SPOOL_DIR", dir)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("POSTBACK_API_KEY", common::API_KEY)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_spool_refuses_to_start_and_files_are_private() {
    let first = GatewayProcess::start(None, &[]).await;
    let dir = first.spool.path().to_owned();

    let second = start_on(&dir);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second process must not run: {stderr}"
    );
    assert!(
        stderr.contains("is in use by another gateway process")
            && stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );

    // The first one is untouched and still takes postbacks.
    let r = reqwest::get(first.url(&common::query("spool-dir-1", "1.00")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    files_are_private(&dir);

    // Once the first is gone, the directory can be taken again.
    let spool = first.spool.clone();
    drop(first); // kills the process and waits for it
    let again = GatewayProcess::start_with_spool(None, &[], spool).await;
    assert_eq!(
        reqwest::get(again.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// An existing SPOOL_DIR is never chmod-ed (a SPOOL_DIR=/var/lib must not
/// change the host's): one open to its group or others is refused with a
/// clear error, one that is its owner's alone is used, and what the gateway
/// writes in it is its owner's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_spool_directory_is_never_chmod_ed_and_refused_when_others_may_enter() {
    let parent = common::tempdir().unwrap();
    let dir = parent.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    for open in [0o755, 0o750, 0o701, 0o2770] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(open)).unwrap();
        let out = start_on(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{open:o}: {stderr}");
        assert!(
            stderr.contains("is open to its group or to others")
                && stderr.contains(&format!("chmod 700 {}", dir.display())),
            "{stderr}"
        );
        let kept = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(kept, open, "the directory keeps its rights");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gw = GatewayProcess::start(None, &[("SPOOL_DIR", dir.to_str().unwrap())]).await;
    files_are_private(&dir);
    drop(gw);
    // A directory the gateway makes is its owner's alone.
    let made = parent.path().join("made");
    let gw = GatewayProcess::start(None, &[("SPOOL_DIR", made.to_str().unwrap())]).await;
    assert_eq!(mode(&made), 0o700);
    drop(gw);
}
