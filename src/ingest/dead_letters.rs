//! Operating the dead-letter queue (SPEC §1.2): list its messages without consuming them, and
//! replay those whose cause is fixed to the usage exchange.
//!
//! Both pull with `basic.get` and keep what they do not remove unacknowledged until the end: the
//! broker hands each message out once per run, and the final nack with requeue gives the rest
//! back in their original order. Replay acks a dead letter only after the broker has confirmed
//! its copy on the usage exchange, so a crash in between replays it a second time, which the
//! accepted-event ledger counts once.

use std::fmt;

use anyhow::Context;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;

use super::decode::ErrorCode;
use super::topology;
use crate::config::AmqpSettings;

/// How much of a body `list` shows.
pub const PREVIEW_BYTES: usize = 200;

/// The headers meterd adds when it dead-letters a message; replay removes every `x-meterd-*`.
pub const ERROR_HEADER: &str = "x-meterd-error";
pub const REASON_HEADER: &str = "x-meterd-reason";
const MARK_PREFIX: &str = "x-meterd-";

/// One message of the dead-letter queue, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// `x-meterd-error`; None for a message meterd did not dead-letter itself.
    pub code: Option<String>,
    /// `x-meterd-reason`.
    pub reason: Option<String>,
    pub routing_key: String,
    pub body_bytes: usize,
    /// The first [`PREVIEW_BYTES`] of the body, lossily decoded, control characters escaped.
    pub body_preview: String,
    /// Whether the preview is shorter than the body.
    pub truncated: bool,
}

/// What `list` saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub queue: String,
    /// Messages ready in the queue when the listing began.
    pub queue_messages: u32,
    pub letters: Vec<DeadLetter>,
}

/// What `replay` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayOutcome {
    /// Dead letters taken from the queue and looked at.
    pub examined: u64,
    /// Republished to the usage exchange (confirmed), then removed from the dead-letter queue.
    pub replayed: u64,
    /// Examined but not matching the code: given back to the dead-letter queue.
    pub kept: u64,
    /// Of the messages the dead-letter queue held when the replay began, those still in it.
    /// (Not a fresh count: RabbitMQ answers a count before it has finished requeueing.)
    pub left: u64,
}

/// Shows up to `limit` dead letters, oldest first, and leaves every one of them in the queue.
#[tracing::instrument(skip_all, fields(queue = %settings.dead_letter_queue, limit))]
pub async fn list(settings: &AmqpSettings, limit: usize) -> anyhow::Result<Listing> {
    on_broker(settings, "meterd-dead-letters-list", async |connection| {
        let channel = connection.create_channel().await?;
        let queue_messages = dead_letter_count(&channel, settings).await?;
        let mut letters = Vec::new();
        let mut last_tag = None;
        while letters.len() < limit {
            let Some(message) = get(&channel, settings).await? else {
                break;
            };
            last_tag = Some(message.delivery_tag);
            letters.push(DeadLetter::from_delivery(&message));
        }
        give_back(&channel, last_tag).await?;
        close(&channel).await;
        Ok(Listing {
            queue: settings.dead_letter_queue.clone(),
            queue_messages,
            letters,
        })
    })
    .await
}

/// Republishes dead letters whose code is `code` (all if None), at most `limit` of them, to the
/// usage exchange with their original routing key, body and properties (minus the `x-meterd-*`
/// headers), and removes each from the dead-letter queue once the broker confirmed its copy.
///
/// It looks at no more messages than the queue held at the start, so a replayed message that is
/// still invalid, and comes back as a new dead letter, is not replayed again in the same run.
#[tracing::instrument(skip_all, fields(queue = %settings.dead_letter_queue, code = code.map(ErrorCode::as_str), limit))]
pub async fn replay(
    settings: &AmqpSettings,
    code: Option<ErrorCode>,
    limit: Option<u64>,
) -> anyhow::Result<ReplayOutcome> {
    on_broker(settings, "meterd-dead-letters-replay", async |connection| {
        let source = connection.create_channel().await?;
        let target = connection.create_channel().await?;
        target
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        target
            .exchange_declare(
                settings.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("the usage exchange {} does not exist", settings.exchange))?;
        let initial = dead_letter_count(&source, settings).await?;
        let mut outcome = ReplayOutcome::default();
        let mut last_kept = None;
        while outcome.examined < u64::from(initial) && limit.is_none_or(|n| outcome.replayed < n) {
            let Some(message) = get(&source, settings).await? else {
                break;
            };
            outcome.examined += 1;
            let matches =
                code.is_none_or(|c| header(&message, ERROR_HEADER).as_deref() == Some(c.as_str()));
            if !matches {
                // Left unacked, so the next get moves past it; given back at the end.
                last_kept = Some(message.delivery_tag);
                outcome.kept += 1;
                continue;
            }
            republish(&target, settings, &message).await?;
            source
                .basic_ack(message.delivery_tag, BasicAckOptions::default())
                .await
                .context("ack a replayed dead letter")?;
            outcome.replayed += 1;
        }
        give_back(&source, last_kept).await?;
        outcome.left = u64::from(initial).saturating_sub(outcome.replayed);
        close(&source).await;
        close(&target).await;
        tracing::info!(
            replayed = outcome.replayed,
            kept = outcome.kept,
            left = outcome.left,
            "dead letters replayed"
        );
        Ok(outcome)
    })
    .await
}

/// Runs `work` on a fresh connection and closes it whatever happens, which gives back every
/// message still unacknowledged (after an error, too).
async fn on_broker<T>(
    settings: &AmqpSettings,
    name: &str,
    work: impl AsyncFnOnce(&Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let connection = topology::connect(settings, name)
        .await
        .context("connect to the broker")?;
    let result = work(&connection).await;
    let _ = connection.close(200, "bye".into()).await;
    result
}

/// Messages ready in the dead-letter queue (a passive declare: it must exist).
async fn dead_letter_count(channel: &Channel, settings: &AmqpSettings) -> anyhow::Result<u32> {
    let queue = channel
        .queue_declare(
            settings.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!(
                "the dead-letter queue {} does not exist (meterd declares it when it starts)",
                settings.dead_letter_queue
            )
        })?;
    Ok(queue.message_count())
}

/// Takes the next dead letter, unacknowledged.
async fn get(channel: &Channel, settings: &AmqpSettings) -> anyhow::Result<Option<Delivery>> {
    let message = channel
        .basic_get(
            settings.dead_letter_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .context("basic.get from the dead-letter queue")?;
    Ok(message.map(|m| m.delivery))
}

/// Returns every unacknowledged message up to `last_tag` to the queue, in its original place.
async fn give_back(channel: &Channel, last_tag: Option<u64>) -> anyhow::Result<()> {
    if let Some(tag) = last_tag {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .context("give the dead letters back")?;
    }
    Ok(())
}

async fn close(channel: &Channel) {
    let _ = channel.close(200, "bye".into()).await;
}

/// Publishes a dead letter's original message to the usage exchange and waits for the broker's
/// confirm. Mandatory, so a message no queue would take comes back as an error instead of
/// vanishing while its dead letter is removed.
async fn republish(
    channel: &Channel,
    settings: &AmqpSettings,
    message: &Delivery,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            settings.exchange.as_str().into(),
            message.routing_key.clone(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &message.data,
            original_properties(&message.properties),
        )
        .await?
        .await
        .context("replay a dead letter")?;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!(
            "the usage exchange {} routed the replayed message (routing key {:?}) to no queue",
            settings.exchange,
            message.routing_key.as_str()
        ),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the replayed message"),
    }
}

/// The properties the message had before meterd dead-lettered it: all but the `x-meterd-*`
/// headers. (An empty header table stays where there was none; it means the same.)
fn original_properties(properties: &BasicProperties) -> BasicProperties {
    match properties.headers() {
        None => properties.clone(),
        Some(headers) => {
            let kept: std::collections::BTreeMap<_, _> = headers
                .inner()
                .iter()
                .filter(|(name, _)| !name.as_str().starts_with(MARK_PREFIX))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            properties.clone().with_headers(kept.into())
        }
    }
}

/// A string header, if present.
fn header(message: &Delivery, name: &str) -> Option<String> {
    let headers = message.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

impl DeadLetter {
    fn from_delivery(message: &Delivery) -> DeadLetter {
        let (body_preview, truncated) = preview(&message.data, PREVIEW_BYTES);
        DeadLetter {
            code: header(message, ERROR_HEADER),
            reason: header(message, REASON_HEADER),
            routing_key: message.routing_key.to_string(),
            body_bytes: message.data.len(),
            body_preview,
            truncated,
        }
    }
}

/// The first `max` bytes of `body` as text for a terminal: invalid UTF-8 becomes U+FFFD (but a
/// character cut by the limit is dropped), control characters are escaped so a body cannot
/// break lines or drive the terminal. True if the body was cut.
pub fn preview(body: &[u8], max: usize) -> (String, bool) {
    let truncated = body.len() > max;
    let head = &body[..body.len().min(max)];
    let mut text = String::with_capacity(head.len());
    let mut chunks = head.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\t' => text.push_str("\\t"),
                c if c.is_control() => text.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
                c => text.push(c),
            }
        }
        let cut_by_limit = truncated && chunks.peek().is_none();
        if !chunk.invalid().is_empty() && !cut_by_limit {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (text, truncated)
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_none = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".to_owned());
        writeln!(
            f,
            "{}  routing key {:?}  {} bytes",
            or_none(&self.code),
            self.routing_key,
            self.body_bytes
        )?;
        writeln!(f, "  reason: {}", or_none(&self.reason))?;
        write!(
            f,
            "  body:   {}{}",
            self.body_preview,
            if self.truncated { "…" } else { "" }
        )
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dead-letter queue {}: {} message(s); showing {}",
            self.queue,
            self.queue_messages,
            self.letters.len()
        )?;
        for (i, letter) in self.letters.iter().enumerate() {
            write!(f, "\n#{} {letter}", i + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for ReplayOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed {}; kept {} not matching; {} left in the dead-letter queue",
            self.replayed, self.kept, self.left
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_escape_control_characters_and_cut_at_the_limit() {
        assert_eq!(
            preview(b"{\"a\":\n1}\t\x07\x1b[2J", 200),
            ("{\"a\":\\n1}\\t\\u{7}\\u{1b}[2J".to_owned(), false)
        );
        assert_eq!(preview(b"abcdef", 4), ("abcd".to_owned(), true));
        assert_eq!(
            preview(&[b'a', 0xff, b'b'], 10),
            ("a\u{fffd}b".to_owned(), false)
        );
        // "é" is two bytes; a limit through its middle drops it rather than mangling it.
        assert_eq!(preview("aé".as_bytes(), 2), ("a".to_owned(), true));
        assert_eq!(preview("aé".as_bytes(), 3), ("aé".to_owned(), false));
    }

    #[test]
    fn replay_removes_only_the_meterd_headers() {
        let mut headers = FieldTable::default();
        headers.insert(ERROR_HEADER.into(), AMQPValue::LongString("too_old".into()));
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString("old".into()));
        headers.insert("trace-id".into(), AMQPValue::LongString("abc".into()));
        let dead = topology::usage_message_properties().with_headers(headers);
        let original = original_properties(&dead);
        let names: Vec<&str> = original
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(names, ["trace-id"]);
        assert_eq!(original.content_type(), dead.content_type());
        assert_eq!(original.delivery_mode(), dead.delivery_mode());
    }

    #[test]
    fn codes_parse_by_their_spec_names() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
        }
        assert!("nope".parse::<ErrorCode>().unwrap_err().contains("too_old"));
    }
}
