//! Kafka peers for the security tests. [`TlsKafka`]: tansu (whose `--cert` listener did not
//! complete a TLS handshake here) behind a rustls terminator, with a throwaway CA and
//! certificates made by the `openssl` CLI at test time. [`AuthTansu`]: tansu requiring SASL.
//!
//! tansu advertises the terminator's address, so kedge's leader connections (from Metadata) go
//! through TLS too. The terminator sniffs the first byte of each connection: a TLS handshake
//! record (0x16) is terminated, anything else (a Kafka frame starts with a length, 0x00 for any
//! sane size) is passed through in the clear, so that the plain confluent-kafka consumer can
//! read back what kedge wrote over TLS.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{
    free_port, log_stdio, print_log_if_panicking, run, stop_child, tansu_bin, wait_for_port,
};

/// tansu behind a TLS terminator on 127.0.0.1.
pub struct TlsKafka {
    /// Holds the CA, the certificates and tansu's log.
    dir: TempDir,
    /// tansu's own (plain) port.
    tansu_port: u16,
    /// The terminator's port: the one advertised to clients.
    port: u16,
    /// The tansu process.
    tansu: Option<Child>,
    /// TLS sessions the terminator completed.
    sessions: Arc<AtomicUsize>,
    /// Stops the terminator.
    stop: Option<oneshot::Sender<()>>,
    /// The terminator's thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsKafka {
    /// Makes a CA (`ca.pem`), a second unrelated CA (`wrong-ca.pem`), a server certificate for
    /// 127.0.0.1 signed by the first, and starts tansu and the terminator.
    pub fn start() -> TlsKafka {
        TlsKafka::start_with(false)
    }

    /// Like [`TlsKafka::start`], but the terminator requires a client certificate signed by the
    /// CA (mutual TLS); [`TlsKafka::client_cert`] is one.
    pub fn start_mutual() -> TlsKafka {
        TlsKafka::start_with(true)
    }

    fn start_with(mutual: bool) -> TlsKafka {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-tls-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        // Extensions make v3 certificates; webpki refuses v1 ones.
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for command in [
            "req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key -out ca.pem -subj /CN=kedge-e2e-ca",
            "req -x509 -newkey rsa:2048 -nodes -days 1 -keyout wrong-ca.key -out wrong-ca.pem \
             -subj /CN=kedge-e2e-wrong-ca",
            "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
            "x509 -req -days 1 -CAcreateserial -in server.csr -CA ca.pem -CAkey ca.key \
             -out server.pem -extfile san.ext",
            "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=kedge-e2e-client",
            "x509 -req -days 1 -CAcreateserial -in client.csr -CA ca.pem -CAkey ca.key -out client.pem \
             -extfile client.ext",
        ] {
            openssl(d, command);
        }

        let (tansu_port, port) = (free_port(), free_port());
        let tansu = spawn_tansu(d, tansu_port, port, &[]);

        let client_ca = mutual.then(|| d.join("ca.pem"));
        let config = server_config(
            &d.join("server.pem"),
            &d.join("server.key"),
            client_ca.as_deref(),
        );
        let sessions = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .expect("bind the TLS terminator");
        listener.set_nonblocking(true).expect("nonblocking");
        let counter = sessions.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    _ = terminate(listener, config, tansu_port, counter) => {}
                    _ = stopped => {}
                }
            });
        });
        TlsKafka {
            dir,
            tansu_port,
            port,
            tansu: Some(tansu),
            sessions,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The bootstrap address: the terminator.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign the server certificate.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }

    /// A client certificate and key signed by the CA.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        (d.join("client.pem"), d.join("client.key"))
    }

    /// TLS sessions completed so far.
    pub fn tls_sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Creates a topic through tansu's own port; one that already exists is fine.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let mut command = Command::new(tansu_bin());
        command
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.tansu_port)])
            .current_dir(self.dir.path());
        let output = run(command, Duration::from_secs(60));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() || said.contains("already exists"),
            "tansu topic create {name} failed ({}):\n{said}",
            output.status
        );
    }
}

/// tansu with `--authentication`: it speaks SCRAM-SHA-512 but, with memory storage, has no
/// users (creating one needs an authenticated connection), so every login fails.
pub struct AuthTansu {
    /// Holds tansu's log.
    dir: TempDir,
    /// tansu's port.
    port: u16,
    /// The tansu process.
    child: Option<Child>,
}

impl AuthTansu {
    /// Starts tansu requiring authentication on a free port.
    pub fn start() -> AuthTansu {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-tansu-auth-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let child = spawn_tansu(dir.path(), port, port, &["--authentication"]);
        AuthTansu {
            dir,
            port,
            child: Some(child),
        }
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthTansu {
    fn drop(&mut self) {
        print_log_if_panicking(&self.dir.path().join("tansu.log"));
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        print_log_if_panicking(&self.dir.path().join("tansu.log"));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(mut child) = self.tansu.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }
}

/// Starts tansu (memory storage) on `port`, advertising `advertised`, logging to `dir`/tansu.log.
pub fn spawn_tansu(dir: &Path, port: u16, advertised: u16, extra: &[&str]) -> Child {
    let log = dir.join("tansu.log");
    let (stdout, stderr) = log_stdio(&log);
    let mut tansu = Command::new(tansu_bin())
        .arg("broker")
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .args(extra)
        .current_dir(dir)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn tansu");
    wait_for_port("tansu", port, &mut tansu, &log);
    tansu
}

/// Runs `openssl` with whitespace-separated `args` in `dir`; the keys live and die in the temp dir.
pub fn openssl(dir: &Path, args: &str) {
    let mut command = Command::new("openssl");
    command.args(args.split_whitespace()).current_dir(dir);
    let output = run(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "openssl {args} failed (is the openssl CLI installed?):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A rustls server config for the certificate and key; with `client_ca`, clients must present
/// a certificate it signed.
fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).expect("cert").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("parse cert");
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).expect("key").as_slice())
        .expect("parse key")
        .expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut std::fs::read(ca).expect("ca").as_slice()) {
                roots.add(cert.expect("parse ca")).expect("add ca");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).expect("server config");
    Arc::new(config)
}

/// Accepts connections forever, relaying each to tansu (TLS terminated, or plain as it came).
async fn terminate(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    tansu_port: u16,
    sessions: Arc<AtomicUsize>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, tansu_port)).await
            else {
                return;
            };
            let mut first = [0u8; 1];
            if client.peek(&mut first).await.unwrap_or(0) == 0 {
                return;
            }
            if first[0] == 0x16 {
                // A failed handshake (e.g. the client does not trust our CA) just ends here.
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                sessions.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            } else {
                let mut client = client;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}
