//! A Kafka-protocol broker that only takes encrypted, authenticated clients:
//! Tansu behind stunnel, with certificates made for the test by `openssl`.
//!
//! Tansu 0.6 cannot terminate TLS with a certificate and key of our choosing
//! (its `--cert` and `--key` options exclude each other), so stunnel does:
//! clients connect to stunnel, stunnel forwards the plain bytes to Tansu, and
//! Tansu advertises stunnel's port so that every later connection of a
//! client comes back through TLS too.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{free_port, tansu_bin, wait_for_port};
use super::Record;

/// Starting on free ports can lose a race with another test's process;
/// each attempt takes new ports.
const ATTEMPTS: usize = 4;

/// How much of a child's log a failure shows.
const LOG_TAIL_LINES: usize = 40;

/// The subject of the client certificate.
pub const CLIENT_CN: &str = "postback-gateway test client";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Server TLS, SASL/SCRAM-SHA-512 required by Tansu.
    SaslSsl,
    /// TLS with a client certificate required by stunnel, no SASL.
    Mtls,
}

/// Tansu and the stunnel in front of it, both killed when dropped. Their
/// logs, the certificates and Tansu's database live in a temporary directory
/// removed with it.
pub struct SecureKafka {
    mode: Mode,
    tansu: Option<Child>,
    stunnel: Option<Child>,
    port: u16,
    /// Whether a panic already carries the logs' tails.
    logs_shown: Cell<bool>,
    dir: tempfile::TempDir,
}

impl SecureKafka {
    pub const USER: &'static str = "gateway";
    pub const PASSWORD: &'static str = "s3cret-Postback-Scram";

    /// Tansu (sqlite storage, `--authentication`, a SCRAM-SHA-512 user
    /// [`Self::USER`]/[`Self::PASSWORD`]) behind stunnel (server TLS with a
    /// certificate signed by the test CA).
    pub fn start_sasl_ssl() -> SecureKafka {
        let mut kafka = SecureKafka::prepare(Mode::SaslSsl);
        kafka.create_user();
        kafka.start_pair();
        kafka
    }

    /// Tansu (memory storage, no SASL) behind stunnel that requires a client
    /// certificate signed by the test CA.
    pub fn start_mtls() -> SecureKafka {
        let mut kafka = SecureKafka::prepare(Mode::Mtls);
        kafka.start_pair();
        kafka
    }

    /// `127.0.0.1:PORT` of stunnel: the only address a client needs.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The test CA, which signed the server and the client certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed neither certificate, for "untrusted" cases.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.path("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The librdkafka properties a client needs to talk to this broker
    /// (besides `bootstrap.servers`).
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let ca = self.ca_pem().to_str().unwrap().to_owned();
        let props: Vec<(&str, String)> = match self.mode {
            Mode::SaslSsl => vec![
                ("security.protocol", "SASL_SSL".into()),
                ("ssl.ca.location", ca),
                ("sasl.mechanisms", "SCRAM-SHA-512".into()),
                ("sasl.username", Self::USER.into()),
                ("sasl.password", Self::PASSWORD.into()),
            ],
            Mode::Mtls => vec![
                ("security.protocol", "SSL".into()),
                ("ssl.ca.location", ca),
                (
                    "ssl.certificate.location",
                    self.client_cert().to_str().unwrap().into(),
                ),
                (
                    "ssl.key.location",
                    self.client_key().to_str().unwrap().into(),
                ),
            ],
        };
        props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// What stunnel logged so far (connections, handshake failures).
    pub fn stunnel_log(&self) -> String {
        std::fs::read_to_string(self.path("stunnel.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn prepare(mode: Mode) -> SecureKafka {
        let dir = super::tempdir().unwrap();
        make_certificates(dir.path());
        SecureKafka {
            mode,
            tansu: None,
            stunnel: None,
            port: 0,
            logs_shown: Cell::new(false),
            dir,
        }
    }

    /// Tansu takes SCRAM credentials only through the Kafka protocol, and
    /// with `--authentication` on only from an authenticated client; so the
    /// user is made on a broker without authentication, on the database the
    /// real broker then opens.
    fn create_user(&mut self) {
        let port = self.start_lone_tansu();
        // Exits 0 whatever the broker answered: a user that was not made
        // shows as a refused login.
        let out = Command::new(tansu_bin())
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
                "--mechanism",
                "scram512",
                Self::USER,
                Self::PASSWORD,
            ])
            .current_dir(self.dir.path())
            .output()
            .expect("run tansu user create");
        if !out.status.success() {
            self.fail(&format!(
                "tansu user create exited with {}:\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        kill(&mut self.tansu);
    }

    /// Starts Tansu without authentication and without stunnel, on a free
    /// port it advertises; returns the port.
    fn start_lone_tansu(&mut self) -> u16 {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            match self.start_tansu(port, port, false) {
                Ok(()) => return port,
                Err(e) => last = e,
            }
        }
        self.fail(&last)
    }

    /// Tansu then stunnel, on new ports each attempt: stunnel's port is in
    /// Tansu's arguments, so losing it means starting Tansu again too.
    fn start_pair(&mut self) {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let (tansu_port, tls_port) = (free_port(), free_port());
            let started = self
                .start_tansu(tansu_port, tls_port, self.mode == Mode::SaslSsl)
                .and_then(|()| self.start_stunnel(tls_port, tansu_port));
            match started {
                Ok(()) => {
                    self.port = tls_port;
                    return;
                }
                Err(e) => {
                    last = e;
                    kill(&mut self.stunnel);
                    kill(&mut self.tansu);
                }
            }
        }
        self.fail(&last)
    }

    fn start_tansu(
        &mut self,
        port: u16,
        advertised: u16,
        authentication: bool,
    ) -> Result<(), String> {
        let storage = match self.mode {
            // Relative to the working directory: Tansu 0.6 prefixes an
            // absolute path with the working directory once more.
            Mode::SaslSsl => "sqlite://tansu.db",
            Mode::Mtls => "memory://tansu/",
        };
        let mut cmd = Command::new(tansu_bin());
        cmd.args([
            "broker",
            "--storage-engine",
            storage,
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ]);
        if authentication {
            cmd.arg("--authentication");
        }
        let (stdout, stderr) = self.log_to("tansu.log");
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start tansu");
        let child = self.tansu.insert(child);
        wait_for_port(([127, 0, 0, 1], port).into(), "tansu", child)
    }

    fn start_stunnel(&mut self, accept: u16, connect: u16) -> Result<(), String> {
        let mut conf = front_conf(self.dir.path(), accept, connect);
        if self.mode == Mode::Mtls {
            conf.push_str(&format!(
                "verifyChain = yes\nCAfile = {}\n",
                self.ca_pem().display()
            ));
        }
        let child = spawn_stunnel(self.dir.path(), &conf, self.log_to("stunnel.log"));
        let child = self.stunnel.insert(child);
        wait_for_port(([127, 0, 0, 1], accept).into(), "stunnel", child)
    }

    /// Stdout and stderr appending to `name` in the rig's directory: a
    /// restarted child adds to the log of the one before.
    fn log_to(&self, name: &str) -> (Stdio, Stdio) {
        let file = File::options()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
    }

    fn tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!("--- {name} (last lines) ---\n{}", lines[from..].join("\n"))
    }

    fn fail(&self, what: &str) -> ! {
        self.logs_shown.set(true);
        panic!(
            "{what}\n{}\n{}",
            self.tail("tansu.log"),
            self.tail("stunnel.log")
        )
    }
}

impl Drop for SecureKafka {
    fn drop(&mut self) {
        kill(&mut self.stunnel);
        kill(&mut self.tansu);
        // A failing test sees why the broker side refused or broke.
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!("{}\n{}", self.tail("tansu.log"), self.tail("stunnel.log"));
        }
    }
}

/// stunnel's configuration for TLS on `accept` (the test CA's server
/// certificate for 127.0.0.1 and localhost, in `dir`) forwarded as plain
/// bytes to `connect`.
fn front_conf(dir: &Path, accept: u16, connect: u16) -> String {
    format!(
        "foreground = yes\n\
         pid =\n\
         debug = 5\n\
         \n\
         [front]\n\
         accept = 127.0.0.1:{accept}\n\
         connect = 127.0.0.1:{connect}\n\
         cert = {cert}\n\
         key = {key}\n",
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
    )
}

/// Starts stunnel4 on `conf` (written to `dir`), its log to `log`.
fn spawn_stunnel(dir: &Path, conf: &str, (stdout, stderr): (Stdio, Stdio)) -> Child {
    let conf_path = dir.join("stunnel.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // In the foreground stunnel logs to stderr.
    Command::new("stunnel4")
        .arg(&conf_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start stunnel4 (Debian package stunnel4): {e}"))
}

/// A TLS terminator in front of a plain TCP port, as an ingress or a load
/// balancer is in front of the gateway: stunnel with a server certificate for
/// 127.0.0.1 and localhost, signed by a CA made for the test. Killed when dropped.
pub struct TlsFront {
    child: Child,
    /// The port that speaks TLS.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TlsFront {
    /// TLS on a free port, forwarded to 127.0.0.1:`connect`.
    pub fn start(connect: u16) -> TlsFront {
        let dir = super::tempdir().unwrap();
        make_certificates(dir.path());
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_port();
            let log = File::create(dir.path().join("stunnel.log")).unwrap();
            let io = (Stdio::from(log.try_clone().unwrap()), Stdio::from(log));
            let mut child = spawn_stunnel(dir.path(), &front_conf(dir.path(), port, connect), io);
            match wait_for_port(([127, 0, 0, 1], port).into(), "stunnel", &mut child) {
                Ok(()) => return TlsFront { child, port, dir },
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    /// The CA that signed the front's certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Reads every message of `topic` from the beginning, as
/// [`super::read_topic`] does, with the client properties `props` (say,
/// [`SecureKafka::client_properties`]).
pub fn read_topic_with(
    brokers: &str,
    props: &[(String, String)],
    topic: &str,
    expect: usize,
    settle: Duration,
) -> Vec<Record> {
    super::read_topic_configured(brokers, props, topic, expect, settle)
}

/// The test CA, a server certificate for 127.0.0.1 and localhost and a
/// client certificate both signed by it, and an unrelated CA. EC keys:
/// generating them takes milliseconds, RSA ones noticeably longer.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "postback-gateway test CA"),
        ("other-ca", "postback-gateway unrelated CA"),
    ] {
        openssl(dir, &["req", "-x509"])
            .args(ec)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])
            .args(["-days", "2", "-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .run();
    }
    for (serial, name, cn, ext) in [
        (
            "1",
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("2", "client", CLIENT_CN, "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(dir, &["req", "-new"])
            .args(ec)
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ])
            .args(["-subj", &format!("/CN={cn}")])
            .run();
        openssl(dir, &["x509", "-req", "-in", &format!("{name}.csr")])
            .args(["-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", serial])
            .args(["-days", "2", "-out", &format!("{name}.pem")])
            .args(["-extfile", &format!("{name}.ext")])
            .run();
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    cmd
}

trait Run {
    fn run(&mut self);
}

impl Run for Command {
    fn run(&mut self) {
        let out = self
            .output()
            .unwrap_or_else(|e| panic!("run {self:?} (is the openssl CLI installed?): {e}"));
        assert!(
            out.status.success(),
            "{self:?} exited with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
