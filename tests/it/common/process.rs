//! Separate processes for the end-to-end tests: a Tansu broker and the
//! gateway binary, each killed when its guard is dropped, even on failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts connections; `Err` when the child exited first
/// (typically: another process took the port between `free_port` and its bind).
pub(crate) fn wait_for_port(addr: SocketAddr, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early with {status}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr}");
}

/// Tries to start a child on free ports a few times: a port found free can be
/// taken by another test's process before the child binds it.
const ATTEMPTS: usize = 4;

/// The Tansu binary: `TANSU_BIN`, then `PATH`, then cargo's bin folder.
pub(crate) fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Tansu is not installed. scripts/test.sh installs it; by hand: \
             cargo install tansu --version 0.6.0 --locked --features dynostore"
            )
        })
}

/// Writes `toml` to a config file in a new temporary directory; returns the
/// directory (which removes the file when dropped) and the file's path.
pub fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = super::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// A Tansu broker with in-memory storage on a free loopback port.
pub struct Tansu {
    child: Child,
    pub brokers: String,
}

impl Tansu {
    pub fn start() -> Tansu {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Tansu::try_start() {
                Ok(t) => return t,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn try_start() -> Result<Tansu, String> {
        Tansu::try_start_on(free_port())
    }

    /// A broker on `port` (for a gateway that was pointed at it before it ran).
    pub fn start_on(port: u16) -> Tansu {
        Tansu::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<Tansu, String> {
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(tansu_bin())
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for_port(([127, 0, 0, 1], port).into(), "tansu", &mut child)?;
        Ok(Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        })
    }

    /// Stops the broker process without letting it clean up (SIGSTOP).
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// The gateway binary as its own process.
pub struct GatewayProcess {
    pub child: Child,
    /// Where the spool lives; pass it to `start_with_spool` to restart on it.
    pub spool: Arc<tempfile::TempDir>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

impl GatewayProcess {
    /// Starts the binary against `brokers` (or the embedded cluster when
    /// `None`) with extra environment `env`, and waits for `/readyz`.
    pub async fn start(brokers: Option<&str>, env: &[(&str, &str)]) -> GatewayProcess {
        Self::start_with_spool(brokers, env, Arc::new(super::tempdir().unwrap())).await
    }

    /// Like `start`, on the spool directory `spool` (to restart on the same spool).
    pub async fn start_with_spool(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        spool: Arc<tempfile::TempDir>,
    ) -> GatewayProcess {
        // Logs go to stdout; the test runner shows them when a test fails.
        let gw =
            GatewayProcess::spawn(brokers, env, spool, || (Stdio::inherit(), Stdio::inherit()))
                .await;
        gw.wait_ready().await;
        gw
    }

    /// Like [`GatewayProcess::start`], with the log (stdout) and stderr both written to `log`.
    pub async fn start_logging_to(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> GatewayProcess {
        let gw = GatewayProcess::spawn_logging_to(brokers, env, log).await;
        gw.wait_ready().await;
        gw
    }

    /// Like [`GatewayProcess::start_logging_to`], without waiting for
    /// `/readyz`: for a gateway that is not to become ready.
    pub async fn spawn_logging_to(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> GatewayProcess {
        GatewayProcess::spawn_writing(brokers, env, log, None).await
    }

    /// Like [`GatewayProcess::start`], with the log (stdout) written to
    /// `log` and stderr to `errors`.
    pub async fn start_logging_apart(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        log: &std::path::Path,
        errors: &std::path::Path,
    ) -> GatewayProcess {
        let gw = GatewayProcess::spawn_writing(brokers, env, log, Some(errors)).await;
        gw.wait_ready().await;
        gw
    }

    /// Starts the process with stdout written to `log`, and stderr to
    /// `errors` (else to `log` too).
    async fn spawn_writing(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        log: &std::path::Path,
        errors: Option<&std::path::Path>,
    ) -> GatewayProcess {
        let file = std::fs::File::create(log).expect("log file");
        let err_file = match errors {
            Some(e) => std::fs::File::create(e).expect("stderr file"),
            None => file.try_clone().expect("log file"),
        };
        let spool = Arc::new(super::tempdir().unwrap());
        let io = || {
            let out = file.try_clone().expect("log file");
            let err = err_file.try_clone().expect("stderr file");
            (Stdio::from(out), Stdio::from(err))
        };
        GatewayProcess::spawn(brokers, env, spool, io).await
    }

    /// Starts the process and waits for its admin port.
    async fn spawn(
        brokers: Option<&str>,
        env: &[(&str, &str)],
        spool: Arc<tempfile::TempDir>,
        io: impl Fn() -> (Stdio, Stdio),
    ) -> GatewayProcess {
        let mut attempt = 0;
        let (child, public, admin) = loop {
            attempt += 1;
            let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let (stdout, stderr) = io();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_postback-gateway"));
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("LISTEN_ADDR", public.to_string())
                .env("ADMIN_ADDR", admin.to_string())
                .env("POSTBACK_API_KEY", super::API_KEY)
                .env("POSTBACK_PIXEL_KEY", super::PIXEL_KEY)
                .env("RUST_LOG", "warn")
                .env("SPOOL_DIR", spool.path())
                .stdout(stdout)
                .stderr(stderr);
            match brokers {
                Some(b) => {
                    cmd.env("KAFKA_BROKERS", b);
                }
                // A config file never falls back to the embedded cluster: ask for it.
                None if env.iter().any(|(k, _)| *k == "POSTBACK_CONFIG") => {
                    cmd.env("KAFKA_BROKERS", "embedded");
                }
                None => {}
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start the gateway");
            match wait_for_port(admin, "the gateway", &mut child) {
                Ok(()) => break (child, public, admin),
                Err(e) if attempt >= ATTEMPTS => panic!("{e}"),
                Err(_) => continue,
            }
        };
        GatewayProcess {
            child,
            spool,
            public,
            admin,
        }
    }

    /// Waits until `/readyz` answers 200; fails the test after 20 s.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(self.admin_url("/readyz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway process did not become ready");
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.public, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Waits, off the runtime's threads, for the process to exit by itself.
    pub async fn exit_status(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `kib` KiB mounted on a new directory, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(kib: u32) -> SmallDisk {
        let dir = super::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

impl SmallDisk {
    /// Fills what is left of the disk with a file at `name`, which
    /// [`SmallDisk::free`] removes.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    /// Removes what [`SmallDisk::fill`] wrote.
    pub fn free(&self, name: &str) {
        let _ = std::fs::remove_file(self.path().join(name));
    }
}
