//! From a request frame to a response frame: the request header, version negotiation
//! (ApiVersions), routing to the API handlers, and response framing.
//!
//! Like Kafka, the server closes the connection on a request it cannot parse, an API it does
//! not offer, or a version it did not advertise (ApiVersions excepted: see [`api_versions`]).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    api_versions_response::ApiVersion,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::{Shared, fetch, metadata, offsets, produce};

/// What to do after a request.
pub(crate) enum Outcome {
    /// Write this frame (size prefix included).
    Respond(Bytes),
    /// Write nothing (Produce with acks=0).
    Silent,
    /// Close the connection.
    Close,
}

/// The APIs and versions ApiVersions advertises (DescribeProducers only when switched on).
const SUPPORTED: [(ApiKey, i16, i16); 6] = [
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::InitProducerId, 0, 5),
];
const DESCRIBE_PRODUCERS: (ApiKey, i16, i16) = (ApiKey::DescribeProducers, 0, 0);

/// The API, version and correlation id a response answers.
pub(crate) struct Exchange {
    api_key: ApiKey,
    pub(crate) version: i16,
    correlation_id: i32,
}

impl Exchange {
    /// Frames `body` with the response header version the API and version call for
    /// (kafka-protocol knows that ApiVersions always answers with header v0).
    pub(crate) fn respond<R: Encodable>(&self, body: &R) -> Outcome {
        let header_version = self.api_key.response_header_version(self.version);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        let header = ResponseHeader::default().with_correlation_id(self.correlation_id);
        if header.encode(&mut buf, header_version).is_err()
            || body.encode(&mut buf, self.version).is_err()
        {
            return Outcome::Close;
        }
        let Ok(size) = i32::try_from(buf.len() - 4) else {
            return Outcome::Close;
        };
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        Outcome::Respond(buf.freeze())
    }
}

/// Handles one request frame.
pub(crate) async fn handle(mut frame: Bytes, shared: &Shared) -> Outcome {
    if frame.len() < 4 {
        return Outcome::Close;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Outcome::Close;
    };
    let Ok(header) = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
    else {
        return Outcome::Close;
    };
    shared.counters.request(key);
    let exchange = Exchange {
        api_key,
        version,
        correlation_id: header.correlation_id,
    };
    if api_key == ApiKey::ApiVersions {
        return api_versions(&exchange, &mut frame, shared);
    }
    match advertised(shared).iter().find(|(k, _, _)| *k == api_key) {
        Some((_, min, max)) if (*min..=*max).contains(&version) => {}
        _ => return Outcome::Close,
    }
    match api_key {
        ApiKey::Metadata => match decode(&mut frame, version) {
            Some(req) => exchange.respond(&metadata::metadata(&req, shared)),
            None => Outcome::Close,
        },
        ApiKey::Produce => match decode(&mut frame, version) {
            Some(req) => produce::produce(&exchange, &req, shared),
            None => Outcome::Close,
        },
        ApiKey::InitProducerId => match decode(&mut frame, version) {
            Some(req) => exchange.respond(&produce::init_producer_id(version, &req, shared)),
            None => Outcome::Close,
        },
        ApiKey::Fetch => match decode(&mut frame, version) {
            Some(req) => exchange.respond(&fetch::fetch(&req, shared).await),
            None => Outcome::Close,
        },
        ApiKey::ListOffsets => match decode(&mut frame, version) {
            Some(req) => exchange.respond(&offsets::list_offsets(version, &req, shared)),
            None => Outcome::Close,
        },
        ApiKey::DescribeProducers => match decode(&mut frame, version) {
            Some(req) => exchange.respond(&offsets::describe_producers(&req, shared)),
            None => Outcome::Close,
        },
        _ => Outcome::Close,
    }
}

/// Decodes a request body; `None` if it does not parse (bytes left over are ignored, as
/// Kafka's `AbstractRequest.parseRequest` ignores them).
fn decode<R: Decodable>(frame: &mut Bytes, version: i16) -> Option<R> {
    R::decode(frame, version).ok()
}

fn advertised(shared: &Shared) -> Vec<(ApiKey, i16, i16)> {
    let mut apis = SUPPORTED.to_vec();
    if shared.faults.describe_producers_advertised() {
        apis.push(DESCRIBE_PRODUCERS);
    }
    apis
}

/// ApiVersions. A version above 3 is answered in the v0 format with UNSUPPORTED_VERSION and
/// the ApiVersions range only, so that the client retries lower
/// (`ApiVersionsRequest.getErrorResponse`, KIP-511). v3 requires client software name and
/// version matching `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`, else INVALID_REQUEST
/// (`ApiVersionsRequest.isValid`).
fn api_versions(exchange: &Exchange, frame: &mut Bytes, shared: &Shared) -> Outcome {
    let (_, min, max) = SUPPORTED[0];
    if !(min..=max).contains(&exchange.version) {
        let v0 = Exchange {
            version: 0,
            ..*exchange
        };
        let range = ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(min)
            .with_max_version(max);
        return v0.respond(
            &ApiVersionsResponse::default()
                .with_error_code(ResponseError::UnsupportedVersion.code())
                .with_api_keys(vec![range]),
        );
    }
    let Some(req) = decode::<ApiVersionsRequest>(frame, exchange.version) else {
        return Outcome::Close;
    };
    if exchange.version >= 3
        && !(software_token(&req.client_software_name)
            && software_token(&req.client_software_version))
    {
        return exchange.respond(
            &ApiVersionsResponse::default().with_error_code(ResponseError::InvalidRequest.code()),
        );
    }
    let api_keys = advertised(shared)
        .into_iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    exchange.respond(&ApiVersionsResponse::default().with_api_keys(api_keys))
}

/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`
fn software_token(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::software_token;

    #[test]
    fn software_tokens() {
        for ok in ["kedge", "0.1.0", "a", "apache-kafka-java", "x.y-z"] {
            assert!(software_token(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "kedge/1", ".x"] {
            assert!(!software_token(bad), "{bad}");
        }
    }
}
