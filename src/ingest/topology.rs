//! The exchanges and queues of SPEC §1.3, declared idempotently at start.

use anyhow::Context;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, DefaultConnectionBuilder,
    ExchangeKind,
    options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable},
};

use crate::config::{AmqpSettings, QueueType};

/// Connects to the broker: `amqp://` in the clear, `amqps://` over TLS (rustls), whose
/// server certificate must chain to a webpki root or to a CA of `amqp.tls_ca_file` and name
/// the URL's host.
pub async fn connect(settings: &AmqpSettings, name: &str) -> anyhow::Result<Connection> {
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = &settings.tls_ca_file {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("read amqp.tls_ca_file {path}"))?;
        tls.cert_chain = Some(pem);
    }
    let connection = DefaultConnectionBuilder::new()?
        .with_uri_str(settings.url.clone())
        .with_properties(ConnectionProperties::default().with_connection_name(name.into()))
        .with_tls_config(tls)
        .connect()
        .await
        .with_context(|| format!("connect to the broker at {}", redacted(&settings.url)))?;
    Ok(connection)
}

/// The URL without its password, for error messages.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Declares the usage exchange and queue and the dead-letter exchange and queue, both
/// queues of `amqp.queue_type`. A quorum usage queue also dead-letters, by the broker, a
/// message delivered `amqp.delivery_limit` times without an ack (one that keeps bringing the
/// consumer down). A queue that exists with another type is an error naming both.
pub async fn declare(channel: &Channel, s: &AmqpSettings) -> anyhow::Result<()> {
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
    // A classic queue is declared without the argument, as before it existed, so queues
    // declared by earlier versions stay equivalent.
    if s.queue_type == QueueType::Quorum {
        queue_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    let mut usage_args = queue_args.clone();
    if s.queue_type == QueueType::Quorum {
        usage_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(s.delivery_limit),
        );
        usage_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(s.dead_letter_exchange.as_str().into()),
        );
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
    for (queue, exchange, key, args) in [
        (&s.queue, &s.exchange, "#", &usage_args),
        (
            &s.dead_letter_queue,
            &s.dead_letter_exchange,
            "",
            &queue_args,
        ),
    ] {
        channel
            .queue_declare(queue.as_str().into(), durable_queue, args.clone())
            .await
            .map_err(|e| explain_inequivalent(e, queue, s.queue_type))?;
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

/// Turns the broker's refusal of a queue declared with another type than it has into an
/// error naming the queue and both types. The broker names the first argument that differs,
/// which need not be `x-queue-type`: a quorum declaration also carries the dead-letter
/// exchange and delivery limit, which a classic queue lacks (and the reverse).
fn explain_inequivalent(error: lapin::Error, queue: &str, wanted: QueueType) -> anyhow::Error {
    let text = error.to_string();
    let argument = text
        .split_once("inequivalent arg '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(argument, _)| argument);
    let (other, wanted_lacks) = match wanted {
        QueueType::Classic => ("quorum", "received none"),
        QueueType::Quorum => ("classic", "current is none"),
    };
    let existing = match argument {
        Some("x-queue-type") => text.split_once("current is").and_then(|(_, current)| {
            ["quorum", "stream", "classic"]
                .into_iter()
                .find(|t| current.contains(t))
                // Declared without the argument, the existing queue is a classic one.
                .or((wanted == QueueType::Quorum).then_some("classic"))
        }),
        Some("x-dead-letter-exchange" | "x-delivery-limit") if text.contains(wanted_lacks) => {
            Some(other)
        }
        _ => None,
    };
    let Some(existing) = existing else {
        return anyhow::Error::new(error).context(format!("declare queue {queue}"));
    };
    anyhow::anyhow!(
        "queue {queue} exists as a {existing} queue, but amqp.queue_type is {}: set amqp.queue_type \
         = \"{existing}\", or move its messages and delete it so meterd can declare it anew ({text})",
        wanted.as_str()
    )
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
