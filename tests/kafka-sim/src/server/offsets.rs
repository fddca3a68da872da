//! What a partition holds, without its data: ListOffsets and DescribeProducers.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProducerId,
};

use super::Shared;
use crate::model::LEADER_EPOCH;

/// ListOffsets v1+. A timestamp no record reaches is answered NONE with offset and timestamp
/// −1 (`ReplicaManager.fetchOffset` → `buildErrorResponse(Errors.NONE, …)`); v4+ report the
/// leader epoch with a found offset.
pub(crate) fn list_offsets(
    version: i16,
    req: &ListOffsetsRequest,
    shared: &Shared,
) -> ListOffsetsResponse {
    let model = shared.model();
    let topics = req
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_offset(-1)
                        .with_timestamp(-1)
                        .with_leader_epoch(-1);
                    match model.list_offsets(&topic.name.0, p.partition_index, p.timestamp) {
                        Ok(Some(found)) => answer
                            .with_offset(found.offset)
                            .with_timestamp(found.timestamp)
                            .with_leader_epoch(if version >= 4 { LEADER_EPOCH } else { -1 }),
                        Ok(None) => answer,
                        Err(e) => answer.with_error_code(e.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// DescribeProducers v0: per partition the producers the leader keeps state for
/// (`UnifiedLog.activeProducers`); an idempotent producer has coordinator epoch −1 and no
/// transaction start offset.
pub(crate) fn describe_producers(
    req: &DescribeProducersRequest,
    shared: &Shared,
) -> DescribeProducersResponse {
    let model = shared.model();
    let topics = req
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let answer = PartitionResponse::default().with_partition_index(index);
                    match model.describe_producers(&topic.name.0, index) {
                        Ok(producers) => answer.with_active_producers(
                            producers
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.producer_epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                        Err(e) => answer.with_error_code(e.code()),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
