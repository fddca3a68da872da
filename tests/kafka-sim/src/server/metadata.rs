//! Metadata: the broker itself (node 1 on 127.0.0.1) as the only broker, controller and leader.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::Shared;
use crate::model::TopicInfo;

/// The only broker's node id.
pub(crate) const NODE_ID: i32 = 1;

/// Answers a Metadata request (v1+: a null topic list means all topics; before v4 the request
/// has no `allow_auto_topic_creation` and kafka-protocol decodes it as true, as Kafka treats it).
pub(crate) fn metadata(req: &MetadataRequest, shared: &Shared) -> MetadataResponse {
    let names: Option<Vec<&str>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str()))
            .collect()
    });
    let topics = shared
        .model()
        .metadata(names.as_deref(), req.allow_auto_topic_creation);
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(i32::from(shared.port)),
        ])
        .with_cluster_id(Some(StrBytes::from_static_str("kafka-sim")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics.into_iter().map(topic).collect())
}

fn topic(info: TopicInfo) -> MetadataResponseTopic {
    let partitions = (0..info.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(crate::model::LEADER_EPOCH)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(info.error.map_or(0, |e| e.code()))
        .with_name(Some(TopicName(StrBytes::from_string(info.name))))
        .with_partitions(partitions)
}
