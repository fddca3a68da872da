//! One connection to a Kafka broker: framed, pipelined requests matched to responses by
//! correlation id (Kafka answers the requests of a connection in order).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Largest response accepted until [`Connection::with_max_response`] sets the cluster's own
/// limit (see `kafka::client::max_response_bytes`): enough for every answer but a Fetch's.
const DEFAULT_MAX_RESPONSE: usize = 1024 * 1024;

/// A response frame is read this much at a time, so that its buffer grows with the bytes that
/// actually arrive, not with the length its prefix claims.
const READ_CHUNK: usize = 64 * 1024;

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
    max_response: Arc<AtomicUsize>,
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
        let max_response = Arc::new(AtomicUsize::new(DEFAULT_MAX_RESPONSE));
        let reader = tokio::spawn(read_loop(
            read,
            addr.to_owned(),
            pending.clone(),
            broken.clone(),
            max_response.clone(),
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
            max_response,
            client_id: StrBytes::from_string(client_id.to_owned()),
            reader,
        }
    }

    /// Sets how long writing one request may take before the connection is given up.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the largest response frame accepted (header included); a longer one fails the
    /// connection before its bytes are read.
    pub fn with_max_response(self, bytes: usize) -> Self {
        self.max_response.store(bytes, Ordering::Relaxed);
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
    max_response: Arc<AtomicUsize>,
) {
    let why = loop {
        let len = match read.read_i32().await {
            Ok(n) => n,
            Err(e) => break format!("connection closed: {e}"),
        };
        let limit = max_response.load(Ordering::Relaxed);
        let len = match usize::try_from(len) {
            Ok(len) if (4..=limit).contains(&len) => len,
            Ok(len) if len > limit => {
                break format!("response frame of {len} bytes exceeds the limit of {limit} bytes");
            }
            _ => break format!("invalid response frame length {len}"),
        };
        let mut frame = match read_frame(&mut read, len).await {
            Ok(frame) => frame.freeze(),
            Err(e) => break format!("connection closed mid-response: {e}"),
        };
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

/// Reads the `len` bytes of a frame, its buffer growing as they arrive: a length prefix that
/// the peer does not follow with as many bytes costs no memory.
async fn read_frame(read: &mut ReadHalf<Box<dyn Stream>>, len: usize) -> std::io::Result<BytesMut> {
    let mut frame = BytesMut::new();
    while frame.len() < len {
        let want = (len - frame.len()).min(READ_CHUNK);
        frame.reserve(want);
        // `take` keeps the read inside this frame whatever spare capacity `frame` has.
        let n = (&mut *read).take(want as u64).read_buf(&mut frame).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(frame)
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

    /// Before, any length up to 256 MiB (the systemd unit's MemoryMax) was accepted and its
    /// whole buffer allocated before a byte arrived; the request then waited for its timeout.
    #[tokio::test]
    async fn a_response_longer_than_the_limit_fails_the_connection_at_once() {
        use kafka_protocol::messages::ApiVersionsRequest;
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let conn =
            Connection::over("big:9092", "kedge-test", Box::new(client)).with_max_response(1 << 20);
        let pending = conn.send(&ApiVersionsRequest::default(), 3).await.unwrap();
        // 200 MiB announced, and nothing after it.
        server
            .write_all(&(200i32 << 20).to_be_bytes())
            .await
            .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), pending.recv_raw())
            .await
            .expect("an error at once, not a wait for 200 MiB")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "connection to Kafka broker big:9092 failed: response frame of 209715200 bytes \
             exceeds the limit of 1048576 bytes"
        );
        assert!(conn.is_broken());
    }

    /// Frames are read a chunk at a time: one that arrives in pieces is read whole, and one
    /// right behind it in the same read is left for the next.
    #[tokio::test]
    async fn responses_arriving_in_pieces_or_back_to_back_are_read_exactly() {
        use kafka_protocol::messages::ApiVersionsRequest;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(4096);
        let conn = Connection::over("pieces:9092", "kedge-test", Box::new(client));
        let first = conn.send(&ApiVersionsRequest::default(), 3).await.unwrap();
        let second = conn.send(&ApiVersionsRequest::default(), 3).await.unwrap();
        // Larger than a read chunk, so that it takes several.
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let len = server.read_i32().await.unwrap();
                let mut request = vec![0; usize::try_from(len).unwrap()];
                server.read_exact(&mut request).await.unwrap();
            }
            let mut frames = Vec::new();
            for (correlation, body) in [(0i32, &body[..]), (1, b"second")] {
                frames.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
                frames.extend_from_slice(&correlation.to_be_bytes());
                frames.extend_from_slice(body);
            }
            server.write_all(&frames).await.unwrap();
            (server, body)
        });
        let first = first.recv_raw().await.unwrap();
        let second = second.recv_raw().await.unwrap();
        let (_server, body) = server.await.unwrap();
        assert_eq!(&first[..4], &0i32.to_be_bytes());
        assert_eq!(&first[4..], &body[..]);
        assert_eq!(&second[..], b"\0\0\0\x01second");
        assert!(!conn.is_broken());
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
