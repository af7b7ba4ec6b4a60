//! The exchanges and queues of SPEC §1.3, declared idempotently at start.

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::config::AmqpSettings;

pub async fn connect(settings: &AmqpSettings, name: &str) -> lapin::Result<Connection> {
    Connection::connect(
        &settings.url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

/// Declares the usage exchange and queue and the dead-letter exchange and queue.
pub async fn declare(channel: &Channel, s: &AmqpSettings) -> lapin::Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut queue_args = FieldTable::default();
    if let Some(ms) = s.queue_expires_ms {
        queue_args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
    }
    channel
        .exchange_declare(
            s.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            s.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    for (queue, exchange, key) in [
        (&s.queue, &s.exchange, "#"),
        (&s.dead_letter_queue, &s.dead_letter_exchange, ""),
    ] {
        channel
            .queue_declare(queue.as_str().into(), durable_queue, queue_args.clone())
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Properties of a usage message as publishers should send it: JSON, persistent.
pub fn usage_message_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

/// Publishes on a channel in confirm mode and waits for the broker's ack.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    anyhow::ensure!(!confirm.is_nack(), "the broker refused the message");
    Ok(())
}
