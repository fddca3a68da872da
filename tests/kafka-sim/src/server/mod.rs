//! The model behind a Kafka wire-protocol listener on 127.0.0.1, run in-process on its own tokio
//! runtime (a background thread pool, like a fault proxy), with fault switches for end-to-end
//! tests of the real kedge binary.

mod connection;
mod dispatch;
mod faults;
mod fetch;
mod metadata;
mod offsets;
mod produce;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::model::Cluster;
use faults::{Counters, FailedProduce, Faults};

/// How long dropping a [`SimBroker`] waits for its threads, and with them every socket.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// State shared by the handle and the server's tasks.
pub(crate) struct Shared {
    model: Mutex<Cluster>,
    faults: Faults,
    counters: Counters,
    /// Bumped by [`SimBroker::close_connections`]: every live connection ends with an RST.
    kill: watch::Sender<u64>,
    /// The port Metadata advertises.
    port: u16,
}

impl Shared {
    /// The model; a test that panicked while holding it does not poison it for the server.
    pub(crate) fn model(&self) -> MutexGuard<'_, Cluster> {
        lock(&self.model)
    }
}

/// Locks a mutex, ignoring poisoning (state stays consistent between whole operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulated broker. Dropping it stops the listener and closes every connection.
pub struct SimBroker {
    /// Runs the acceptor and the connections; `None` only while dropping.
    runtime: Option<Runtime>,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SimBroker {
    /// Serves `cluster` on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When no runtime can be built or nothing can be bound on 127.0.0.1.
    pub fn start(cluster: Cluster) -> SimBroker {
        SimBroker::start_on(cluster, 0).expect("start the simulated broker on 127.0.0.1")
    }

    /// Serves `cluster` on 127.0.0.1:`port` (0: a free port), for example the port of a broker
    /// that was stopped, to simulate a restart.
    pub fn start_on(cluster: Cluster, port: u16) -> io::Result<SimBroker> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kafka-sim")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, port)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            model: Mutex::new(cluster),
            faults: Faults::default(),
            counters: Counters::default(),
            kill: watch::channel(0).0,
            port: addr.port(),
        });
        runtime.spawn(connection::accept_loop(listener, shared.clone()));
        Ok(SimBroker {
            runtime: Some(runtime),
            addr,
            shared,
        })
    }

    /// The listening address (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The model, locked: call its controls and inspection methods while clients run. Keep
    /// the guard short; the server waits for it.
    pub fn model(&self) -> MutexGuard<'_, Cluster> {
        self.shared.model()
    }

    /// Stops serving and hands back the model, for example to serve it again with
    /// [`SimBroker::start_on`] on the same port.
    pub fn stop(self) -> Cluster {
        let cluster = self.model().clone();
        drop(self);
        cluster
    }

    /// While on, requests are applied to the model but no response is written: connections
    /// stay open and silent, as behind a proxy that swallows replies.
    pub fn lose_responses(&self, on: bool) {
        self.shared.faults.lose_responses(on);
    }

    /// Swallows the next `n` responses (of any request, on any connection) after applying
    /// their requests.
    pub fn lose_next_responses(&self, n: u64) {
        self.shared.faults.lose_next_responses(n);
    }

    /// The next `n` Fetch requests get what Kafka sends while throttling a client: no
    /// partitions at all and `throttle_time_ms` set.
    pub fn throttle_fetches(&self, n: u64, throttle_ms: i32) {
        self.shared.faults.throttle_fetches(n, throttle_ms);
    }

    /// Answers every partition of the next Produce request with error `code`, after applying
    /// the request to the model (`appended`: e.g. REQUEST_TIMED_OUT 7 for a write that did
    /// happen) or without applying it.
    pub fn fail_next_produce(&self, code: i16, appended: bool) {
        self.shared
            .faults
            .fail_next_produce(FailedProduce { code, appended });
    }

    /// Ends every live connection with an RST (new connections are served).
    pub fn close_connections(&self) {
        self.shared.kill.send_modify(|n| *n += 1);
    }

    /// While on, every new connection is reset as soon as it is accepted.
    pub fn refuse(&self, on: bool) {
        self.shared.faults.refuse(on);
    }

    /// Whether ApiVersions advertises (and the server answers) DescribeProducers v0, as Kafka
    /// ≥ 2.8 does; off by default, like older brokers and tansu. When off, a DescribeProducers
    /// request closes the connection, as an unknown API does.
    pub fn advertise_describe_producers(&self, on: bool) {
        self.shared.faults.advertise_describe_producers(on);
    }

    /// Requests received with this API key (whether answered, lost or failed).
    pub fn requests(&self, api_key: ApiKey) -> u64 {
        self.shared.counters.requests(api_key as i16)
    }

    /// Produce partition answers with this error code (0: success), counting the ones whose
    /// response was then lost: what the broker decided, e.g. "no DUPLICATE_SEQUENCE_NUMBER".
    pub fn produce_answers(&self, code: i16) -> u64 {
        self.shared.counters.produce_answers(code)
    }

    /// Connections accepted so far (refused ones included).
    pub fn connections(&self) -> u64 {
        self.shared.counters.connections()
    }
}

impl Drop for SimBroker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Waiting for the worker threads (which drop every task, and so every socket)
            // blocks, which tokio forbids on a runtime thread: an async test may drop a
            // SimBroker, so the wait happens on a thread of its own.
            let waiter = std::thread::spawn(move || runtime.shutdown_timeout(SHUTDOWN_WAIT));
            let _ = waiter.join();
        }
    }
}

#[cfg(test)]
mod tests;
