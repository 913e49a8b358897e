//! Restaurant feeds across nodes (cluster mode): a tablet may connect to
//! any node, but its restaurant's orders run on the owner of the
//! restaurant's region only, so the frames of that feed (new orders, each
//! status change, the driver at the restaurant) travel on
//! `<bucket>.restaurant.<id>.out`.
//!
//! Every node subscribes to all restaurants' subjects at once (one
//! wildcard subscription) and hands each frame to its local tablets of
//! that restaurant, if any: a restaurant frame is one per order change, a
//! few a second in a city, too few to be worth a subscription per
//! restaurant and the bookkeeping of who watches what. A node skips the
//! frames it published itself (its own tablets had them already).
//!
//! Payload: one byte for the length of the publishing node's id, the id,
//! then the frame as local tablets get it. Bounded: one queue of
//! [`QUEUE`] frames to one publisher task; when it is full a frame is
//! dropped and counted (a tablet then misses that change until its next
//! refresh, as one whose socket dropped).

use actors::domain::model::RestaurantId;
use actors::engine::feeds::{RestaurantBus, RestaurantFeeds};
use actors::metrics as m;
use actors::wire::Frame;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Restaurant frames waiting for the publisher task.
const QUEUE: usize = 4_096;
/// Wait before subscribing again after the subscription ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The NATS side of [`RestaurantBus`].
pub struct NatsRestaurantBus {
    outgoing: mpsc::Sender<(RestaurantId, Frame)>,
}

pub fn subject(bucket: &str, restaurant_id: RestaurantId) -> String {
    format!("{bucket}.restaurant.{restaurant_id}.out")
}

/// The restaurant of a subject on this bucket; None for anything else.
fn restaurant_of(bucket: &str, subject: &str) -> Option<RestaurantId> {
    subject
        .strip_prefix(bucket)?
        .strip_prefix(".restaurant.")?
        .strip_suffix(".out")?
        .parse()
        .ok()
}

fn encode(node: &str, frame: &Frame) -> bytes::Bytes {
    let node = &node.as_bytes()[..node.len().min(u8::MAX as usize)];
    let mut payload = bytes::BytesMut::with_capacity(1 + node.len() + frame.len());
    payload.extend_from_slice(&[node.len() as u8]);
    payload.extend_from_slice(node);
    payload.extend_from_slice(frame);
    payload.freeze()
}

/// The publishing node and the frame; None if malformed.
fn decode(payload: &bytes::Bytes) -> Option<(&[u8], Frame)> {
    let len = usize::from(*payload.first()?);
    let node = payload.get(1..1 + len)?;
    Some((node, payload.slice(1 + len..)))
}

impl NatsRestaurantBus {
    /// Publishes this node's restaurant frames and delivers the other
    /// nodes' to `feeds`.
    pub fn start(
        client: async_nats::Client,
        bucket: &str,
        node: &str,
        feeds: Arc<RestaurantFeeds>,
    ) -> NatsRestaurantBus {
        let (outgoing, queued) = mpsc::channel(QUEUE);
        tokio::spawn(publish_queued(
            client.clone(),
            bucket.to_string(),
            node.to_string(),
            queued,
        ));
        tokio::spawn(hear(client, bucket.to_string(), node.to_string(), feeds));
        NatsRestaurantBus { outgoing }
    }
}

impl RestaurantBus for NatsRestaurantBus {
    fn publish(&self, restaurant_id: RestaurantId, frame: &Frame) {
        if self
            .outgoing
            .try_send((restaurant_id, frame.clone()))
            .is_err()
        {
            metrics::counter!(m::CLUSTER_RESTAURANT_BUS_MESSAGES_TOTAL, "direction" => "dropped")
                .increment(1);
        }
    }
}

async fn publish_queued(
    client: async_nats::Client,
    bucket: String,
    node: String,
    mut queued: mpsc::Receiver<(RestaurantId, Frame)>,
) {
    while let Some((restaurant_id, frame)) = queued.recv().await {
        let sent = client
            .publish(subject(&bucket, restaurant_id), encode(&node, &frame))
            .await;
        let direction = if sent.is_ok() { "out" } else { "dropped" };
        metrics::counter!(m::CLUSTER_RESTAURANT_BUS_MESSAGES_TOTAL, "direction" => direction)
            .increment(1);
    }
}

async fn hear(
    client: async_nats::Client,
    bucket: String,
    node: String,
    feeds: Arc<RestaurantFeeds>,
) {
    let all = format!("{bucket}.restaurant.*.out");
    loop {
        match client.subscribe(all.clone()).await {
            Ok(mut subscriber) => {
                while let Some(message) = subscriber.next().await {
                    let (Some(restaurant_id), Some((from, frame))) = (
                        restaurant_of(&bucket, message.subject.as_str()),
                        decode(&message.payload),
                    ) else {
                        tracing::debug!(subject = %message.subject, "Malformed restaurant frame");
                        continue;
                    };
                    if from == node.as_bytes() {
                        continue;
                    }
                    metrics::counter!(m::CLUSTER_RESTAURANT_BUS_MESSAGES_TOTAL, "direction" => "in")
                        .increment(1);
                    feeds.deliver(restaurant_id, &frame);
                }
            }
            Err(error) => tracing::warn!(%error, "Restaurant subjects not subscribed"),
        }
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restaurant_frame_names_its_node_and_a_subject_its_restaurant() {
        let frame = Frame::from_static(b"{\"type\":\"order_update\",\"orderId\":7}");
        let payload = encode("n0123456789ab", &frame);
        assert_eq!(
            decode(&payload),
            Some((&b"n0123456789ab"[..], frame.clone()))
        );
        assert_eq!(decode(&bytes::Bytes::from_static(b"")), None);
        assert_eq!(decode(&bytes::Bytes::from_static(b"\x05ab")), None);
        assert_eq!(restaurant_of("b1", &subject("b1", 42)), Some(42));
        assert_eq!(restaurant_of("b1", "b1.restaurant.x.out"), None);
        assert_eq!(restaurant_of("b1", "b2.restaurant.4.out"), None);
        assert_eq!(restaurant_of("b1", "b1.order.4.out"), None);
    }
}
