//! Accepting connections and serving one: size-prefixed request frames in, at most one
//! response frame per request out, in order (Kafka handles a connection's requests one at a
//! time).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::dispatch::{self, Outcome};

/// Kafka's default `socket.request.max.bytes`: a larger size prefix closes the connection.
const MAX_REQUEST_BYTES: usize = 104_857_600;

/// Accepts connections until the runtime stops, each served by its own task.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: retry without spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.counters.connection();
        if shared.faults.refusing() {
            reset(stream);
            continue;
        }
        tokio::spawn(connection(stream, shared.clone()));
    }
}

/// Closes with an RST rather than a FIN, as a crashed or firewalled broker would appear.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Serves one connection until the client closes it, it sends something malformed, or
/// [`super::SimBroker::close_connections`] resets it.
async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut kill = shared.kill.subscribe();
    let killed = tokio::select! {
        () = serve(&mut stream, &shared) => false,
        _ = kill.changed() => true,
    };
    if killed {
        reset(stream);
    }
}

async fn serve(stream: &mut TcpStream, shared: &Shared) {
    while let Some(frame) = read_frame(stream).await {
        match dispatch::handle(frame, shared).await {
            Outcome::Close => return,
            Outcome::Silent => {}
            Outcome::Respond(response) => {
                if shared.faults.take_lost_response() {
                    continue;
                }
                if stream.write_all(&response).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The next request frame without its size prefix; `None` at end of stream, on an error or
/// for an impossible size.
async fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0; 4];
    stream.read_exact(&mut size).await.ok()?;
    let size = usize::try_from(i32::from_be_bytes(size)).ok()?;
    if size > MAX_REQUEST_BYTES {
        return None;
    }
    let mut frame = vec![0; size];
    stream.read_exact(&mut frame).await.ok()?;
    Some(Bytes::from(frame))
}
