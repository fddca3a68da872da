//! Kafka response decoding (crates/wire/src/connection.rs `PendingResponse::recv`, client.rs,
//! sasl.rs, agent/src/delivery/link.rs) and record batches (crates/wire/src/batch.rs), on bytes
//! from the broker.
//!
//! Byte 0 picks what the bytes are, byte 1 the version (within the range kedge negotiates):
//! the response frame after its length prefix (header, then body, decoded as kedge decodes it),
//! or a record set as a Fetch response carries it. The record sets of decoded Fetch responses
//! go through `fetched_entries` / `batch_info` / `decode_batch` as `kedge audit` and the
//! delivery verifier read them; SASL auth bytes through the SCRAM client.

#![no_main]

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchResponse, InitProducerIdResponse, ListOffsetsResponse,
    MetadataResponse, ProduceResponse, ResponseHeader, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::Decodable;
use kedge_wire::batch;
use kedge_wire::scram::{ScramClient, ScramHash};
use kedge_fuzz::Input;
use libfuzzer_sys::fuzz_target;

/// Kafka's UNSUPPORTED_VERSION error code: the ApiVersions answer is then retried as v0.
const UNSUPPORTED_VERSION: i16 = 35;

/// The responses kedge reads and the versions it asks for.
const APIS: [(ApiKey, i16, i16); 8] = [
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Produce, 3, 12),
];

/// A record set as kedge reads it from a Fetch response.
fn record_set(records: &[u8]) {
    // As the client hands them on: slices of the response's own buffer.
    let response = bytes::Bytes::copy_from_slice(records);
    if let Ok(entries) = batch::fetched_entries(&response) {
        for e in entries {
            let _ = e.readable();
            if e.magic == 2 {
                if let Ok(info) = batch::batch_info(&e.bytes) {
                    assert_eq!(info.len(), 1);
                }
            }
            if e.readable() {
                let _ = batch::decode_batch(&e.bytes);
                let _ = e.records();
            }
        }
    }
    let _ = batch::batch_info(records);
    let _ = batch::decode_batch(records);
}

/// Every v2 batch's CRC set to match, so that mutations get past the checksum.
fn fix_crcs(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let mut at = 0usize;
    while v.len() - at >= 21 {
        let len = i32::from_be_bytes(v[at + 8..at + 12].try_into().unwrap());
        let Ok(len) = usize::try_from(len) else { break };
        let end = at + 12 + len;
        if end > v.len() || len < 9 {
            break;
        }
        let crc = crc32c::crc32c(&v[at + 21..end]);
        v[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    v
}

fn scram(server_first: &[u8], server_final: &[u8]) {
    for hash in [ScramHash::Sha256, ScramHash::Sha512] {
        let Ok(mut c) = ScramClient::with_nonce(hash, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
        else {
            return;
        };
        if c.client_final(server_first).is_ok() {
            let _ = c.verify_server_final(server_final);
        }
    }
}

fn response(api: ApiKey, version: i16, mut frame: Bytes) {
    if api == ApiKey::ApiVersions {
        // client.rs `negotiate`: header v0 (correlation id), error code peeked, v0 retried.
        if frame.remaining() < 6 {
            return;
        }
        frame.advance(4);
        if frame.clone().get_i16() == UNSUPPORTED_VERSION {
            let _ = ApiVersionsResponse::decode(&mut frame.clone(), 0);
        }
        if let Ok(r) = ApiVersionsResponse::decode(&mut frame, version) {
            let _ = r
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .count();
        }
        return;
    }
    if ResponseHeader::decode(&mut frame, api.response_header_version(version)).is_err() {
        return;
    }
    match api {
        ApiKey::SaslHandshake => {
            let _ = SaslHandshakeResponse::decode(&mut frame, version);
        }
        ApiKey::SaslAuthenticate => {
            if let Ok(r) = SaslAuthenticateResponse::decode(&mut frame, version) {
                scram(&r.auth_bytes, &r.auth_bytes);
            }
        }
        ApiKey::Metadata => {
            let _ = MetadataResponse::decode(&mut frame, version);
        }
        ApiKey::InitProducerId => {
            let _ = InitProducerIdResponse::decode(&mut frame, version);
        }
        ApiKey::Fetch => {
            if let Ok(r) = FetchResponse::decode(&mut frame, version) {
                for t in &r.responses {
                    for p in &t.partitions {
                        if let Some(records) = &p.records {
                            record_set(records);
                        }
                    }
                }
            }
        }
        ApiKey::ListOffsets => {
            let _ = ListOffsetsResponse::decode(&mut frame, version);
        }
        ApiKey::Produce => {
            let _ = ProduceResponse::decode(&mut frame, version);
        }
        _ => unreachable!(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let which = input.u8();
    let v = input.u8();
    let rest = input.rest();
    match which % 12 {
        n @ 0..8 => {
            let (api, lo, hi) = APIS[usize::from(n)];
            let version = lo + (i16::from(v) % (hi - lo + 1));
            response(api, version, Bytes::copy_from_slice(rest));
        }
        8 | 9 => record_set(rest),
        10 => record_set(&fix_crcs(rest)),
        _ => {
            let cut = usize::from(v).min(rest.len());
            scram(&rest[..cut], &rest[cut..]);
        }
    }
});
