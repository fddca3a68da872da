//! A TCP fault proxy on 127.0.0.1: forwards to an upstream address and injects faults on demand
//! (latency, blackhole, resets with RST, a one-off cut after N bytes, refused connections).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Size of the buffer each direction of a connection reads into.
const CHUNK: usize = 64 * 1024;

/// How the proxy treats traffic from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything at once.
    Pass,
    /// Delay every chunk, in either direction, by this much before forwarding it.
    Latency(Duration),
    /// Accept connections and keep them open but forward nothing either way: bytes wait in the
    /// proxy (like packets a TCP stack keeps retransmitting) and flow on once the mode changes.
    Blackhole,
    /// Close each new connection immediately (live ones keep passing).
    Refuse,
    /// Requests go through, answers are dropped: the broker does the work and the client never
    /// hears of it. Bytes dropped mid-frame stay dropped: a connection that saw this mode is
    /// useless afterwards, as after a real loss.
    SwallowReplies,
}

/// State shared between the proxy's handle and its tasks.
struct Shared {
    /// The current mode; connections watch it.
    mode: watch::Sender<Mode>,
    /// Bumped by [`Proxy::reset`]; every connection alive at the time ends with an RST.
    resets: watch::Sender<u64>,
    /// Upstream-bound bytes still allowed through before the next cut (`u64::MAX`: no cut armed).
    cut_budget: Mutex<u64>,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Connections currently open.
    live: AtomicU64,
    /// Connections ended by a reset or a cut.
    killed: AtomicU64,
    /// Bytes handed on client → upstream.
    bytes_up: AtomicU64,
    /// Bytes handed on upstream → client.
    bytes_down: AtomicU64,
    /// Bytes upstream → client dropped in [`Mode::SwallowReplies`].
    bytes_swallowed: AtomicU64,
}

/// A running fault proxy; its listener and every connection close when it is dropped.
pub struct Proxy {
    /// Runs the acceptor and the connections; dropping it ends them all.
    runtime: Runtime,
    /// Port the proxy listens on (127.0.0.1).
    port: u16,
    /// Shared state and counters.
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind proxy on 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            mode: watch::channel(Mode::Pass).0,
            resets: watch::channel(0).0,
            cut_budget: Mutex::new(u64::MAX),
            accepted: AtomicU64::new(0),
            live: AtomicU64::new(0),
            killed: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_swallowed: AtomicU64::new(0),
        });
        runtime.spawn(accept_loop(listener, upstream, shared.clone()));
        Proxy {
            runtime,
            port,
            shared,
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's address as `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switches the mode for live and new connections.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Closes every live connection abruptly (RST to both sides), then passes traffic.
    pub fn reset(&self) {
        self.set_mode(Mode::Pass);
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Once: after `bytes` more upstream-bound bytes, the connection carrying the next one is
    /// reset mid-stream (the rest of that chunk is not forwarded); later traffic passes.
    /// `cut_after(u64::MAX)` disarms a cut that has not happened yet.
    pub fn cut_after(&self, bytes: u64) {
        *self.shared.cut_budget.lock().expect("cut lock") = bytes;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections open right now.
    pub fn live(&self) -> u64 {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// Connections ended by [`Proxy::reset`] or a cut.
    pub fn killed(&self) -> u64 {
        self.shared.killed.load(Ordering::Relaxed)
    }

    /// Bytes forwarded client → upstream.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes forwarded upstream → client.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::Relaxed)
    }

    /// Bytes upstream → client dropped by [`Mode::SwallowReplies`].
    pub fn bytes_swallowed(&self) -> u64 {
        self.shared.bytes_swallowed.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        eprintln!(
            "proxy :{}: {} connections ({} killed), {} bytes up, {} bytes down",
            self.port,
            self.accepted(),
            self.killed(),
            self.bytes_up(),
            self.bytes_down()
        );
        // Replace the runtime so that its tasks (and sockets) are dropped without blocking.
        let runtime = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("placeholder runtime"),
        );
        runtime.shutdown_background();
    }
}

/// Accepts connections forever, handing each to its own task.
async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if *shared.mode.borrow() == Mode::Refuse {
            shared.killed.fetch_add(1, Ordering::Relaxed);
            abort(client.as_raw_fd());
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, upstream, shared.clone()));
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender closed (or the receiver went away): pass the close on.
    Closed,
    /// The one-off cut hit this direction: the whole connection must go down with an RST.
    Cut,
    /// A reset or the other direction's cut: the sockets were closed with an RST.
    Aborted,
}

/// Forwards one client connection until either side closes, a reset or a cut.
async fn connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(upstream)).await
    else {
        abort(client.as_raw_fd());
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.live.fetch_add(1, Ordering::Relaxed);
    let (aborting, abort_seen) = watch::channel(false);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut up = std::pin::pin!(pump(
        client_read,
        server_write,
        shared.clone(),
        true,
        abort_seen.clone()
    ));
    let mut down = std::pin::pin!(pump(
        server_read,
        client_write,
        shared.clone(),
        false,
        abort_seen
    ));
    let (mut up_end, mut down_end) = (None, None);
    while up_end.is_none() || down_end.is_none() {
        tokio::select! {
            end = &mut up, if up_end.is_none() => up_end = Some(end),
            end = &mut down, if down_end.is_none() => down_end = Some(end),
            _ = resets.changed(), if !*aborting.borrow() => {
                aborting.send_replace(true);
            }
        }
        if up_end == Some(End::Cut) || down_end == Some(End::Cut) {
            aborting.send_replace(true);
        }
    }
    if *aborting.borrow() {
        shared.killed.fetch_add(1, Ordering::Relaxed);
    }
    shared.live.fetch_sub(1, Ordering::Relaxed);
}

/// Copies one direction until it ends; on a cut or an abort closes both sockets with an RST.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    upstream_bound: bool,
    mut aborted: watch::Receiver<bool>,
) -> End {
    let end = tokio::select! {
        end = forward(&mut from, &mut to, &shared, upstream_bound) => end,
        _ = aborted.wait_for(|yes| *yes) => End::Aborted,
    };
    if end == End::Closed {
        let _ = to.shutdown().await;
        return end;
    }
    // Linger 0 makes the close an RST; `forget` keeps the write half from sending a FIN first.
    abort(from.as_ref().as_raw_fd());
    abort(to.as_ref().as_raw_fd());
    to.forget();
    end
}

/// Copies `from` to `to` chunk by chunk, honouring the mode and the cut.
async fn forward(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    upstream_bound: bool,
) -> End {
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        // Hold the chunk while blackholed; delay it under latency.
        let current = *mode
            .wait_for(|m| *m != Mode::Blackhole)
            .await
            .expect("proxy mode sender lives in Shared");
        if let Mode::Latency(delay) = current {
            tokio::time::sleep(delay).await;
        }
        if current == Mode::SwallowReplies && !upstream_bound {
            shared
                .bytes_swallowed
                .fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        let mut chunk = &buf[..n];
        let mut cut = false;
        if upstream_bound {
            let mut budget = shared.cut_budget.lock().expect("cut lock");
            if *budget != u64::MAX {
                let allowed = usize::try_from(*budget).unwrap_or(usize::MAX);
                if allowed < n {
                    chunk = &buf[..allowed];
                    cut = true;
                    *budget = u64::MAX;
                } else {
                    *budget -= n as u64;
                }
            }
        }
        // Counted before the write, so that a peer that has read them sees them counted.
        let counter = if upstream_bound {
            &shared.bytes_up
        } else {
            &shared.bytes_down
        };
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if to.write_all(chunk).await.is_err() {
            return End::Closed;
        }
        if cut {
            return End::Cut;
        }
    }
}

/// Sets `SO_LINGER` to zero on a socket so that closing it sends an RST instead of a FIN.
fn abort(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by the caller for the duration of this call, and the
    // option value is a properly sized, initialised `linger`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())
                .expect("linger size fits socklen_t"),
        )
    };
    if rc != 0 {
        eprintln!(
            "proxy: SO_LINGER on fd {fd}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::{Mode, Proxy};
    use crate::support::wait_until;

    /// A thread that echoes every connection on a free port; returns its address.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo server");
        let addr = listener.local_addr().expect("echo address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Connects to the proxy with a 2 s read timeout.
    fn client(proxy: &Proxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).expect("connect to proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        stream
    }

    /// Sends `data` and reads back as many bytes; the error kind if that fails.
    fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Result<Vec<u8>, ErrorKind> {
        stream.write_all(data).map_err(|e| e.kind())?;
        let mut back = vec![0u8; data.len()];
        stream.read_exact(&mut back).map_err(|e| e.kind())?;
        Ok(back)
    }

    #[test]
    fn pass_forwards_and_counts() {
        let proxy = Proxy::start(echo_server());
        let mut stream = client(&proxy);
        assert_eq!(
            round_trip(&mut stream, b"hello").as_deref(),
            Ok(&b"hello"[..])
        );
        assert_eq!((proxy.accepted(), proxy.live()), (1, 1));
        assert_eq!((proxy.bytes_up(), proxy.bytes_down()), (5, 5));
    }

    #[test]
    fn latency_delays_each_direction() {
        let proxy = Proxy::start(echo_server());
        proxy.set_mode(Mode::Latency(Duration::from_millis(150)));
        let mut stream = client(&proxy);
        let started = Instant::now();
        assert_eq!(
            round_trip(&mut stream, b"slow").as_deref(),
            Ok(&b"slow"[..])
        );
        let took = started.elapsed();
        eprintln!("latency 150 ms each way: round trip {took:?}");
        assert!(
            took >= Duration::from_millis(300),
            "round trip took {took:?}"
        );
    }

    #[test]
    fn blackhole_holds_bytes_until_healed() {
        let proxy = Proxy::start(echo_server());
        let mut stream = client(&proxy);
        proxy.set_mode(Mode::Blackhole);
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        let err = round_trip(&mut stream, b"lost?").expect_err("nothing comes back");
        assert!(matches!(err, ErrorKind::WouldBlock | ErrorKind::TimedOut));
        // New connections are accepted too, and stay silent.
        let mut second = client(&proxy);
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("read timeout");
        assert!(round_trip(&mut second, b"x").is_err());
        assert_eq!(proxy.bytes_up(), 0);
        proxy.set_mode(Mode::Pass);
        let mut back = [0u8; 5];
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        stream.read_exact(&mut back).expect("held bytes arrive");
        assert_eq!(&back, b"lost?");
    }

    #[test]
    fn reset_sends_rst_then_passes() {
        let proxy = Proxy::start(echo_server());
        let mut stream = client(&proxy);
        assert!(round_trip(&mut stream, b"before").is_ok());
        proxy.reset();
        let mut buf = [0u8; 1];
        let err = stream.read(&mut buf).expect_err("an RST, not a FIN");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
        wait_until(
            "the reset connection to end",
            Duration::from_secs(2),
            || proxy.live() == 0,
        );
        assert_eq!(proxy.killed(), 1);
        let mut fresh = client(&proxy);
        assert_eq!(
            round_trip(&mut fresh, b"after").as_deref(),
            Ok(&b"after"[..])
        );
    }

    #[test]
    fn cut_after_forwards_n_bytes_once() {
        let proxy = Proxy::start(echo_server());
        proxy.cut_after(3);
        let mut stream = client(&proxy);
        stream.write_all(b"abcdef").expect("write");
        let mut got = Vec::new();
        let err = loop {
            let mut buf = [0u8; 16];
            match stream.read(&mut buf) {
                Ok(0) => break ErrorKind::UnexpectedEof,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e.kind(),
            }
        };
        assert_eq!(err, ErrorKind::ConnectionReset);
        assert!(b"abc".starts_with(&got), "echoed {got:?}");
        assert_eq!(proxy.bytes_up(), 3);
        let mut again = client(&proxy);
        assert_eq!(
            round_trip(&mut again, b"abcdef").as_deref(),
            Ok(&b"abcdef"[..])
        );
    }

    #[test]
    fn swallow_replies_passes_requests_and_drops_answers() {
        let proxy = Proxy::start(echo_server());
        let mut stream = client(&proxy);
        proxy.set_mode(Mode::SwallowReplies);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("read timeout");
        assert!(round_trip(&mut stream, b"request").is_err());
        wait_until("the echo to be swallowed", Duration::from_secs(2), || {
            proxy.bytes_swallowed() == 7
        });
        assert_eq!((proxy.bytes_up(), proxy.bytes_down()), (7, 0));
    }

    #[test]
    fn refuse_closes_new_connections_only() {
        let proxy = Proxy::start(echo_server());
        let mut old = client(&proxy);
        assert!(round_trip(&mut old, b"1").is_ok());
        proxy.set_mode(Mode::Refuse);
        let mut refused = client(&proxy);
        assert!(round_trip(&mut refused, b"2").is_err());
        assert_eq!(round_trip(&mut old, b"3").as_deref(), Ok(&b"3"[..]));
        proxy.set_mode(Mode::Pass);
        let mut fresh = client(&proxy);
        assert_eq!(round_trip(&mut fresh, b"4").as_deref(), Ok(&b"4"[..]));
        assert_eq!(proxy.accepted(), 3);
    }
}
