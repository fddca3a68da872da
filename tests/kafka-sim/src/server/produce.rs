//! The producer's APIs: InitProducerId and Produce.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::records::Compression;

use super::Shared;
use super::dispatch::{Exchange, Outcome};
use crate::batch::BatchHeader;
use crate::model::Cluster;

/// InitProducerId. Before v3 the request carries no producer id and epoch.
pub(crate) fn init_producer_id(
    version: i16,
    req: &InitProducerIdRequest,
    shared: &Shared,
) -> InitProducerIdResponse {
    let current = (version >= 3).then_some((req.producer_id.0, req.producer_epoch));
    match shared.model().init_producer_id(current) {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// Produce: every partition's batch through the model (or the armed failure), answered per
/// partition. acks other than −1, 0, 1 → INVALID_REQUIRED_ACKS and nothing applied; acks=0 →
/// applied, and no response at all, as Kafka does.
pub(crate) fn produce(exchange: &Exchange, req: &ProduceRequest, shared: &Shared) -> Outcome {
    let invalid_acks = !matches!(req.acks, -1..=1);
    let failure = shared.faults.take_failed_produce();
    let mut model = shared.model();
    let responses = req
        .topic_data
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|p| {
                    let records = p.records.as_deref().unwrap_or_default();
                    let mut apply = || {
                        append(
                            &mut model,
                            exchange.version,
                            &topic.name.0,
                            p.index,
                            records,
                        )
                    };
                    let result = match failure {
                        _ if invalid_acks => Err(ResponseError::InvalidRequiredAcks.code()),
                        Some(f) => {
                            if f.appended {
                                let _ = apply();
                            }
                            Err(f.code)
                        }
                        None => apply().map_err(|e| e.code()),
                    };
                    let answer = match result {
                        Ok(appended) => PartitionProduceResponse::default()
                            .with_base_offset(appended.base_offset)
                            .with_log_start_offset(appended.log_start_offset),
                        Err(code) => PartitionProduceResponse::default()
                            .with_error_code(code)
                            .with_base_offset(-1)
                            .with_log_start_offset(-1),
                    };
                    shared.counters.produce_answer(answer.error_code);
                    answer.with_index(p.index).with_log_append_time_ms(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    drop(model);
    if req.acks == 0 {
        return Outcome::Silent;
    }
    exchange.respond(&ProduceResponse::default().with_responses(responses))
}

/// One partition's batch: zstd needs Produce v7+ (`ProduceRequest.validateRecords`), the rest
/// is the model's.
fn append(
    model: &mut Cluster,
    version: i16,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> Result<crate::model::Appended, ResponseError> {
    let zstd = BatchHeader::read(records).and_then(|h| h.compression()) == Some(Compression::Zstd);
    if zstd && version < 7 {
        return Err(ResponseError::UnsupportedCompressionType);
    }
    model.produce(topic, partition, records)
}
