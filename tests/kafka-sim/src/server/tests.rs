//! Loopback tests: a raw TcpStream speaking the protocol, encoded with kafka-protocol.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::SimBroker;
use crate::batch::{Codec, Idempotence, NewRecord, encode_batch};
use crate::model::Cluster;

const T: &str = "readings";

/// A blocking client: one request at a time, correlation ids counted up.
struct Client {
    stream: TcpStream,
    next: i32,
}

impl Client {
    fn connect(broker: &SimBroker) -> Client {
        let stream = TcpStream::connect(broker.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client { stream, next: 0 }
    }

    /// Writes a request; returns its correlation id.
    fn send<R: Request>(&mut self, req: &R, version: i16) -> i32 {
        let api_key = ApiKey::try_from(R::KEY).expect("known key");
        let correlation_id = self.next;
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .expect("header");
        req.encode(&mut buf, version).expect("body");
        let size = i32::try_from(buf.len() - 4).expect("size");
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).expect("write");
        correlation_id
    }

    /// Reads one response frame: its correlation id and body.
    fn receive(&mut self, api_key: ApiKey, version: i16) -> (i32, Bytes) {
        let mut size = [0; 4];
        self.stream.read_exact(&mut size).expect("response size");
        let mut frame = vec![0; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).expect("response");
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .expect("response header");
        (header.correlation_id, frame)
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let api_key = ApiKey::try_from(R::KEY).expect("known key");
        let sent = self.send(req, version);
        let (correlation_id, mut body) = self.receive(api_key, version);
        assert_eq!(correlation_id, sent);
        R::Response::decode(&mut body, version).expect("response body")
    }

    /// Whether the broker closed (or reset) the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut,
        }
    }
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(T))
}

fn produce_request(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

fn fetch_request(partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn batch(pid: i64, seq: i32, n: i32) -> Bytes {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord::value(1000, format!("r{i}")))
        .collect();
    let idem = Idempotence {
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: seq,
    };
    encode_batch(Some(idem), &records, Codec::Zstd)
}

fn partition_answer(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn loopback_produce_and_fetch() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 2));
    let mut c = Client::connect(&broker);

    let versions = c.call(
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kedge-test"))
            .with_client_software_version(StrBytes::from_static_str("0.1.0")),
        3,
    );
    assert_eq!(versions.error_code, 0);
    let range = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::Produce), Some((3, 12)));
    assert_eq!(range(ApiKey::Fetch), Some((4, 12)));
    assert_eq!(range(ApiKey::InitProducerId), Some((0, 5)));
    assert_eq!(range(ApiKey::DescribeProducers), None);

    let metadata = c.call(
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic())),
        ])),
        12,
    );
    assert_eq!(metadata.brokers[0].port, i32::from(broker.port()));
    assert_eq!(metadata.brokers[0].host.as_str(), "127.0.0.1");
    assert_eq!(metadata.topics[0].error_code, 0);
    assert_eq!(metadata.topics[0].partitions.len(), 2);
    assert_eq!(metadata.topics[0].partitions[1].leader_id, BrokerId(1));

    let init = c.call(
        &InitProducerIdRequest::default()
            .with_transaction_timeout_ms(-1)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        4,
    );
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;

    let first = batch(pid, 0, 3);
    let r = c.call(&produce_request(1, first.clone()), 9);
    assert_eq!(partition_answer(&r), (0, 0));
    let r = c.call(&produce_request(1, batch(pid, 3, 2)), 9);
    assert_eq!(partition_answer(&r), (0, 3));
    // A resend of the first batch: Kafka's answer to a duplicate.
    let r = c.call(&produce_request(1, first.clone()), 9);
    assert_eq!(partition_answer(&r), (0, 0));
    assert_eq!(broker.produce_answers(0), 3);

    let fetched = c.call(&fetch_request(1, 0), 12);
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark, p.log_start_offset),
        (0, 5, 0)
    );
    let mut records = p.records.clone().expect("records");
    assert_eq!(records.len(), first.len() + batch(pid, 3, 2).len());
    let batches = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut records)
        .expect("decode the fetched batches");
    let offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.offset))
        .collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4]);
    assert!(batches[0].records.iter().all(|r| r.producer_id == pid));

    let out_of_range = c.call(&fetch_request(1, 6), 12);
    let p = &out_of_range.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark, p.log_start_offset),
        (1, -1, -1)
    );

    let offsets = c.call(
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(1)
                            .with_timestamp(-1),
                    ]),
            ]),
        7,
    );
    assert_eq!(offsets.topics[0].partitions[0].offset, 5);
    assert_eq!(broker.requests(ApiKey::Produce), 3);
}

#[test]
fn lost_responses_are_applied_but_never_written() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    broker.lose_responses(true);
    c.send(&produce_request(0, batch(7, 0, 2)), 9);
    assert!(!c.closed(), "the connection stays open and silent");
    assert_eq!(broker.model().log_end_offset(T, 0), Ok(2));
    broker.lose_responses(false);
    // The next request is answered; the lost answer never comes.
    let sent = c.send(&produce_request(0, batch(7, 2, 1)), 9);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (correlation_id, mut body) = c.receive(ApiKey::Produce, 9);
    assert_eq!(correlation_id, sent);
    let r = ProduceResponse::decode(&mut body, 9).unwrap();
    assert_eq!(partition_answer(&r), (0, 2));

    broker.lose_next_responses(1);
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send(&fetch_request(0, 0), 12);
    assert!(!c.closed());
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = c.call(&fetch_request(0, 0), 12);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 3);
}

#[test]
fn failed_produce_after_append() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    broker.fail_next_produce(7, true);
    let b = batch(7, 0, 2);
    assert_eq!(
        partition_answer(&c.call(&produce_request(0, b.clone()), 9)),
        (7, -1)
    );
    assert_eq!(broker.model().log_end_offset(T, 0), Ok(2));
    // The retry is a duplicate, answered with the original offset.
    assert_eq!(
        partition_answer(&c.call(&produce_request(0, b.clone()), 9)),
        (0, 0)
    );
    broker.fail_next_produce(7, false);
    let next = batch(7, 2, 1);
    assert_eq!(
        partition_answer(&c.call(&produce_request(0, next.clone()), 9)),
        (7, -1)
    );
    assert_eq!(broker.model().log_end_offset(T, 0), Ok(2));
    assert_eq!(
        partition_answer(&c.call(&produce_request(0, next), 9)),
        (0, 2)
    );
    assert_eq!(broker.produce_answers(7), 2);
    assert_eq!(broker.produce_answers(46), 0);
}

#[test]
fn zstd_needs_produce_v7_and_acks_zero_is_silent() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    assert_eq!(
        partition_answer(&c.call(&produce_request(0, batch(7, 0, 1)), 6)).0,
        76
    );
    c.send(&produce_request(0, batch(7, 0, 1)).with_acks(0), 9);
    // The next answer is the Fetch's: nothing was written for acks=0.
    let r = c.call(&fetch_request(0, 0), 12);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 1);
}

#[test]
fn unsupported_api_versions_version_gets_a_v0_answer() {
    let broker = SimBroker::start(Cluster::new());
    let mut c = Client::connect(&broker);
    let sent = c.send(&ApiVersionsRequest::default(), 4);
    let (correlation_id, mut body) = c.receive(ApiKey::ApiVersions, 4);
    assert_eq!(correlation_id, sent);
    let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert_eq!(r.api_keys.len(), 1);
    assert_eq!(
        (r.api_keys[0].min_version, r.api_keys[0].max_version),
        (0, 3)
    );
    // v3 with an invalid client software name.
    let r = c.call(
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("bad name"))
            .with_client_software_version(StrBytes::from_static_str("1")),
        3,
    );
    assert_eq!(r.error_code, 42);
    // An unadvertised version of another API closes the connection.
    c.send(&fetch_request(0, 0), 13);
    assert!(c.closed());
}

#[test]
fn describe_producers_when_advertised() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    c.call(&produce_request(0, batch(7, 0, 4)), 9);
    broker.advertise_describe_producers(true);
    let versions = c.call(&ApiVersionsRequest::default(), 2);
    assert!(
        versions
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::DescribeProducers as i16)
    );
    let r = c.call(
        &DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(topic())
                .with_partition_indexes(vec![0, 5]),
        ]),
        0,
    );
    let parts = &r.topics[0].partitions;
    let p = &parts[0].active_producers[0];
    assert_eq!(
        (p.producer_id.0, p.producer_epoch, p.last_sequence),
        (7, 0, 3)
    );
    assert_eq!(
        (
            p.last_timestamp,
            p.coordinator_epoch,
            p.current_txn_start_offset
        ),
        (1000, -1, -1)
    );
    assert_eq!(parts[1].error_code, 3);
    broker.advertise_describe_producers(false);
    c.send(&DescribeProducersRequest::default(), 0);
    assert!(c.closed());
}

#[test]
fn throttled_fetch_has_no_partitions() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    broker.throttle_fetches(1, 250);
    let r = c.call(&fetch_request(0, 0), 12);
    assert_eq!((r.throttle_time_ms, r.responses.len()), (250, 0));
    let r = c.call(&fetch_request(0, 0), 12);
    assert_eq!((r.throttle_time_ms, r.responses.len()), (0, 1));
}

#[test]
fn fetch_waits_for_data_up_to_max_wait() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    let started = Instant::now();
    let r = c.call(
        &fetch_request(0, 0).with_max_wait_ms(200).with_min_bytes(1),
        12,
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        r.responses[0].partitions[0]
            .records
            .as_ref()
            .map(Bytes::len),
        Some(0)
    );

    let waiting = c.send(
        &fetch_request(0, 0)
            .with_max_wait_ms(10_000)
            .with_min_bytes(1),
        12,
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut producer = Client::connect(&broker);
    producer.call(&produce_request(0, batch(7, 0, 1)), 9);
    let (correlation_id, mut body) = c.receive(ApiKey::Fetch, 12);
    assert_eq!(correlation_id, waiting);
    let r = FetchResponse::decode(&mut body, 12).unwrap();
    assert!(
        r.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|b| b.has_remaining())
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn resets_refusals_and_malformed_requests() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let mut c = Client::connect(&broker);
    c.call(&ApiVersionsRequest::default(), 0);
    broker.close_connections();
    assert!(c.closed());

    let mut c = Client::connect(&broker);
    c.stream.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    assert!(c.closed(), "a malformed request closes the connection");

    let mut c = Client::connect(&broker);
    c.stream.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    assert!(c.closed(), "an impossible size closes the connection");

    broker.refuse(true);
    let mut c = Client::connect(&broker);
    assert!(c.closed());
    broker.refuse(false);
    let mut c = Client::connect(&broker);
    assert_eq!(c.call(&ApiVersionsRequest::default(), 0).error_code, 0);
    assert_eq!(broker.connections(), 5);
}

#[test]
fn restart_on_the_same_port_keeps_the_log() {
    let broker = SimBroker::start(Cluster::new().with_topic(T, 1));
    let port = broker.port();
    Client::connect(&broker).call(&produce_request(0, batch(7, 0, 2)), 9);
    let mut cluster = broker.stop();
    cluster.forget_all_producers();
    let broker = SimBroker::start_on(cluster, port).expect("the port is free again");
    let r = Client::connect(&broker).call(&fetch_request(0, 0), 12);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);
}
