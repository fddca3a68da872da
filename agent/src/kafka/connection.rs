//! One connection to a Kafka broker: framed, pipelined requests matched to responses by
//! correlation id (Kafka answers the requests of a connection in order).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::KafkaError;

/// Largest response frame accepted; a corrupt length prefix must not allocate gigabytes.
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// How long one request may take to be written before the connection is given up: a peer that
/// stops reading must not hold a writer (and every request queued behind it) forever.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers connections for the life of the process, so that a caller can tell a new connection
/// to the same broker from the one it sent on before.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// TLS for broker connections.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The rustls client configuration (roots, client certificate).
    pub config: Arc<rustls::ClientConfig>,
    /// Name to verify certificates against; `None` uses each broker's host.
    pub server_name: Option<String>,
}

/// A byte stream to a broker: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Pending = Arc<Mutex<PendingState>>;

struct PendingState {
    waiters: HashMap<i32, oneshot::Sender<Result<Bytes, KafkaError>>>,
    closed: Option<String>,
}

/// A live connection. Dropping it closes the socket.
pub struct Connection {
    id: u64,
    write_timeout: Duration,
    addr: String,
    writer: tokio::sync::Mutex<Writer>,
    pending: Pending,
    broken: Arc<AtomicBool>,
    client_id: StrBytes,
    reader: tokio::task::JoinHandle<()>,
}

struct Writer {
    half: WriteHalf<Box<dyn Stream>>,
    next_correlation: i32,
}

/// A response that will arrive on the connection.
pub struct PendingResponse<R> {
    rx: oneshot::Receiver<Result<Bytes, KafkaError>>,
    api_key: ApiKey,
    version: i16,
    addr: String,
    _response: PhantomData<fn() -> R>,
}

impl Connection {
    /// Connects over TCP, then TLS when `tls` is set, all within `timeout`.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
        tls: Option<&TlsSettings>,
    ) -> Result<Self, KafkaError> {
        let connect_err = |reason: String| KafkaError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(timeout, async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| connect_err(e.to_string()))?;
            // Requests are small and latency matters more than packet count on loopback and LAN.
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls else {
                return Ok(Box::new(tcp) as Box<dyn Stream>);
            };
            let name = tls.server_name.as_deref().unwrap_or_else(|| host_of(addr));
            let server_name = ServerName::try_from(name.to_owned())
                .map_err(|e| connect_err(format!("invalid TLS server name {name:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| {
                    connect_err(format!("TLS handshake failed: {}", tls_reason(&e, name)))
                })?;
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
        .await
        .map_err(|_| connect_err(format!("no answer within {timeout:?}")))??;
        Ok(Self::over(addr, client_id, stream))
    }

    /// Wraps an established stream.
    pub fn over(addr: &str, client_id: &str, stream: Box<dyn Stream>) -> Self {
        let (read, write) = tokio::io::split(stream);
        let pending: Pending = Arc::new(Mutex::new(PendingState {
            waiters: HashMap::new(),
            closed: None,
        }));
        let broken = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(
            read,
            addr.to_owned(),
            pending.clone(),
            broken.clone(),
        ));
        Connection {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            addr: addr.to_owned(),
            writer: tokio::sync::Mutex::new(Writer {
                half: write,
                next_correlation: 0,
            }),
            pending,
            broken,
            client_id: StrBytes::from_string(client_id.to_owned()),
            reader,
        }
    }

    /// Sets how long writing one request may take before the connection is given up.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// This connection's number, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address this connection was made to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection failed; a broken connection is dropped and replaced.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Marks the connection unusable, failing every pending request.
    pub fn close(&self, why: &str) {
        self.broken.store(true, Ordering::Relaxed);
        fail_all(&self.pending, &self.addr, why);
        self.reader.abort();
    }

    /// Writes a request and returns the response to come.
    pub async fn send<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<PendingResponse<R::Response>, KafkaError> {
        let api_key = ApiKey::try_from(R::KEY).map_err(|_| KafkaError::Protocol {
            addr: self.addr.clone(),
            reason: format!("unknown api key {}", R::KEY),
        })?;
        let mut w = self.writer.lock().await;
        if self.is_broken() {
            return Err(KafkaError::Disconnected {
                addr: self.addr.clone(),
            });
        }
        let correlation_id = w.next_correlation;
        w.next_correlation = w.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let frame = encode_frame(
            &header,
            api_key.request_header_version(version),
            request,
            version,
        )
        .map_err(|reason| KafkaError::Protocol {
            addr: self.addr.clone(),
            reason,
        })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock");
            if let Some(why) = &p.closed {
                return Err(KafkaError::Io {
                    addr: self.addr.clone(),
                    reason: why.clone(),
                });
            }
            p.waiters.insert(correlation_id, tx);
        }
        let written = match tokio::time::timeout(self.write_timeout, w.half.write_all(&frame)).await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "writing a request took longer than {:?}",
                self.write_timeout
            )),
        };
        if let Err(reason) = written {
            drop(w);
            self.close(&reason);
            return Err(KafkaError::Io {
                addr: self.addr.clone(),
                reason,
            });
        }
        Ok(PendingResponse {
            rx,
            api_key,
            version,
            addr: self.addr.clone(),
            _response: PhantomData,
        })
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub async fn call<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, KafkaError> {
        let pending = self.send(request, version).await?;
        match tokio::time::timeout(timeout, pending.recv()).await {
            Ok(r) => r,
            Err(_) => {
                self.close("request timed out");
                Err(KafkaError::Timeout {
                    addr: self.addr.clone(),
                })
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl<R> PendingResponse<R> {
    /// Waits for the response frame (header included) without decoding it.
    pub async fn recv_raw(self) -> Result<Bytes, KafkaError> {
        self.rx.await.map_err(|_| KafkaError::Disconnected {
            addr: self.addr.clone(),
        })?
    }
}

impl<R: Decodable> PendingResponse<R> {
    /// Waits for the response and decodes it.
    pub async fn recv(self) -> Result<R, KafkaError> {
        let mut frame = self.rx.await.map_err(|_| KafkaError::Disconnected {
            addr: self.addr.clone(),
        })??;
        let header_version = self.api_key.response_header_version(self.version);
        let protocol = |reason: String| KafkaError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        kafka_protocol::messages::ResponseHeader::decode(&mut frame, header_version)
            .map_err(|e| protocol(format!("bad {:?} response header: {e:#}", self.api_key)))?;
        R::decode(&mut frame, self.version).map_err(|e| {
            protocol(format!(
                "bad {:?} v{} response: {e:#}",
                self.api_key, self.version
            ))
        })
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A TLS failure in words an operator can act on; rustls's own names otherwise.
fn tls_reason(e: &std::io::Error, name: &str) -> String {
    use rustls::CertificateError as C;
    let Some(rustls::Error::InvalidCertificate(cert)) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match cert {
        C::UnknownIssuer => {
            "the broker's certificate is not signed by a trusted CA (check kafka.tls.ca_file)"
                .into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the broker's certificate is not valid for the name {name:?} (check kafka.tls.server_name)"
        ),
        C::Expired | C::ExpiredContext { .. } => "the broker's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the broker's certificate is not valid yet (check the clock)".into()
        }
        other => format!("invalid broker certificate: {other:?}"),
    }
}

fn encode_frame<R: Encodable>(
    header: &RequestHeader,
    header_version: i16,
    body: &R,
    version: i16,
) -> Result<BytesMut, String> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("{e:#}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("{e:#}"))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "request larger than 2 GiB".to_owned())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

async fn read_loop(
    mut read: ReadHalf<Box<dyn Stream>>,
    addr: String,
    pending: Pending,
    broken: Arc<AtomicBool>,
) {
    let why = loop {
        let len = match read.read_i32().await {
            Ok(n) => n,
            Err(e) => break format!("connection closed: {e}"),
        };
        if len < 4 || len as usize > MAX_FRAME {
            break format!("invalid response frame length {len}");
        }
        let mut frame = BytesMut::zeroed(len as usize);
        if let Err(e) = read.read_exact(&mut frame).await {
            break format!("connection closed mid-response: {e}");
        }
        let mut frame = frame.freeze();
        let correlation_id = frame.clone().get_i32();
        let waiter = pending
            .lock()
            .expect("pending lock")
            .waiters
            .remove(&correlation_id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(Ok(std::mem::take(&mut frame)));
            }
            None => break format!("response for unknown correlation id {correlation_id}"),
        }
    };
    broken.store(true, Ordering::Relaxed);
    fail_all(&pending, &addr, &why);
}

/// Fails every waiting request; the address keeps the error naming its broker.
fn fail_all(pending: &Pending, addr: &str, why: &str) {
    let mut p = pending.lock().expect("pending lock");
    if p.closed.is_none() {
        p.closed = Some(why.to_owned());
    }
    for (_, tx) in p.waiters.drain() {
        let _ = tx.send(Err(KafkaError::Io {
            addr: addr.to_owned(),
            reason: why.to_owned(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::{Connection, host_of, tls_reason};
    use rustls::CertificateError;
    use std::time::Duration;

    /// A peer that accepts and then never reads: the socket buffers fill and a write blocks.
    /// Without a deadline the writer (and every request behind it) waited forever.
    #[tokio::test]
    async fn a_write_that_cannot_finish_fails_the_connection_after_its_deadline() {
        use kafka_protocol::messages::produce_request::{
            PartitionProduceData, ProduceRequest, TopicProduceData,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move { listener.accept().await.unwrap() });
        let conn = Connection::connect(&addr, "kedge-test", Duration::from_secs(5), None)
            .await
            .unwrap()
            .with_write_timeout(Duration::from_millis(300));
        let _peer = held.await.unwrap();
        // 64 MiB: far more than loopback socket buffers hold.
        let request = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default().with_partition_data(vec![
                PartitionProduceData::default()
                    .with_records(Some(bytes::Bytes::from(vec![0u8; 64 << 20]))),
            ]),
        ]);
        let started = std::time::Instant::now();
        let sent = conn.send(&request, 9).await;
        assert!(sent.is_err(), "the write cannot have finished");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(conn.is_broken());
    }

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn tls_failures_say_what_to_check() {
        let unknown_ca = io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(tls_reason(&unknown_ca, "k").contains("check kafka.tls.ca_file"));
        let wrong_name = io(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert_eq!(
            tls_reason(&wrong_name, "kafka.example"),
            "the broker's certificate is not valid for the name \"kafka.example\" \
             (check kafka.tls.server_name)"
        );
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(tls_reason(&eof, "k"), "tls handshake eof");
    }

    #[test]
    fn host_of_strips_the_port_and_ipv6_brackets() {
        assert_eq!(host_of("kafka.example:9093"), "kafka.example");
        assert_eq!(host_of("127.0.0.1:9092"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9092"), "::1");
    }
}
