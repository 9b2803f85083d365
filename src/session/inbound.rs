//! The client's side of a connection: WebSocket frames decoded from the upgraded request's
//! payload (actix-http's codec), fragmented messages reassembled, as a stream of [`Inbound`]
//! items for the session actor.
//!
//! Limits are checked here, before anything is buffered past them. Each frame's header is read
//! ([`check_header`]) before its payload is buffered: a declared length over MAX_FRAME_BYTES
//! ends the stream with [`InboundError::TooBig`] (1009) at once, and a control frame that is
//! fragmented or declares more than 125 bytes, or a 64-bit length with its top bit set, with
//! [`InboundError::BadHeader`] (1002). So the bytes held for one connection's unfinished frame
//! never exceed MAX_FRAME_BYTES plus one read, whatever length a client declares. A message
//! reassembled from fragments is held to MAX_FRAME_BYTES too.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::{
    error::PayloadError,
    web::{self, Bytes, BytesMut},
};
use bytestring::ByteString;
use futures_util::Stream;
use tokio_util::codec::Decoder;

/// One complete message or control frame from the client.
#[derive(Debug)]
pub(crate) enum Inbound {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    Close,
}

/// Why the client's side ended abnormally. After one of these the stream ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InboundError {
    #[error("message larger than {limit} bytes")]
    TooBig { limit: usize },
    #[error("WebSocket protocol violation: {0}")]
    Protocol(#[source] ProtocolError),
    #[error("WebSocket protocol violation: {0}")]
    BadHeader(&'static str),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("connection lost: {0}")]
    Lost(#[source] PayloadError),
}

/// A message arriving in fragments.
struct Fragments {
    text: bool,
    bytes: BytesMut,
}

pub(crate) struct InboundFrames {
    payload: web::Payload,
    /// Received bytes not yet decoded into a frame.
    unparsed: BytesMut,
    codec: Codec,
    fragments: Option<Fragments>,
    max_message_bytes: usize,
    ended: bool,
}

impl InboundFrames {
    pub(crate) fn new(payload: web::Payload, max_message_bytes: usize) -> Self {
        InboundFrames {
            payload,
            unparsed: BytesMut::new(),
            codec: Codec::new().max_size(max_message_bytes),
            fragments: None,
            max_message_bytes,
            ended: false,
        }
    }

    /// Turns a decoded frame into a message, or None while a fragmented message is incomplete.
    fn assemble(&mut self, frame: Frame) -> Result<Option<Inbound>, InboundError> {
        let message = match frame {
            Frame::Text(bytes) => text(bytes)?,
            Frame::Binary(_) => Inbound::Binary,
            Frame::Ping(payload) => Inbound::Ping(payload),
            Frame::Pong(_) => Inbound::Pong,
            Frame::Close(_) => Inbound::Close,
            Frame::Continuation(Item::FirstText(bytes)) => return self.start(true, bytes),
            Frame::Continuation(Item::FirstBinary(bytes)) => return self.start(false, bytes),
            Frame::Continuation(Item::Continue(bytes)) => {
                self.append(&bytes)?;
                return Ok(None);
            }
            Frame::Continuation(Item::Last(bytes)) => {
                self.append(&bytes)?;
                let Some(Fragments { text: is_text, bytes }) = self.fragments.take() else {
                    return Err(InboundError::Protocol(ProtocolError::ContinuationNotStarted));
                };
                if is_text {
                    text(bytes.freeze())?
                } else {
                    Inbound::Binary
                }
            }
        };
        Ok(Some(message))
    }

    fn start(&mut self, text: bool, first: Bytes) -> Result<Option<Inbound>, InboundError> {
        self.fragments = Some(Fragments { text, bytes: BytesMut::new() });
        self.append(&first)?;
        Ok(None)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), InboundError> {
        let Some(fragments) = self.fragments.as_mut() else {
            return Err(InboundError::Protocol(ProtocolError::ContinuationNotStarted));
        };
        if fragments.bytes.len() + bytes.len() > self.max_message_bytes {
            return Err(InboundError::TooBig { limit: self.max_message_bytes });
        }
        fragments.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn decode(&mut self) -> Result<Option<Inbound>, InboundError> {
        loop {
            check_header(&self.unparsed, self.max_message_bytes)?;
            let Some(frame) = self.codec.decode(&mut self.unparsed).map_err(|error| match error {
                ProtocolError::Overflow => InboundError::TooBig { limit: self.max_message_bytes },
                other => InboundError::Protocol(other),
            })?
            else {
                break;
            };
            if let Some(message) = self.assemble(frame)? {
                return Ok(Some(message));
            }
        }
        if self.unparsed.is_empty() {
            // Everything received is decoded: let the buffer go, so an idle connection holds no
            // receive memory here.
            self.unparsed = BytesMut::new();
        }
        Ok(None)
    }
}

/// The longest payload a control frame may declare (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Rules on the header of the frame `unparsed` starts with, as soon as enough of it is in, so a
/// frame that will be refused is refused before its payload is buffered. Returns Ok while the
/// header is incomplete; the codec then decides the rest (masking, opcodes, reserved bits).
fn check_header(unparsed: &[u8], max_payload: usize) -> Result<(), InboundError> {
    let [first, second, rest @ ..] = unparsed else {
        return Ok(());
    };
    let finished = first & 0x80 != 0;
    let control = first & 0x08 != 0;
    let declared = match second & 0x7F {
        126 => match rest {
            [high, low, ..] => u64::from(u16::from_be_bytes([*high, *low])),
            _ => return Ok(()),
        },
        127 => match rest.get(..8) {
            Some(bytes) => u64::from_be_bytes(bytes.try_into().unwrap_or_default()),
            None => return Ok(()),
        },
        short => u64::from(short),
    };
    if control && !finished {
        return Err(InboundError::BadHeader("fragmented control frame"));
    }
    if control && declared > MAX_CONTROL_PAYLOAD {
        return Err(InboundError::BadHeader("control frame longer than 125 bytes"));
    }
    if declared > i64::MAX as u64 {
        return Err(InboundError::BadHeader("frame length with its most significant bit set"));
    }
    if declared > max_payload as u64 {
        return Err(InboundError::TooBig { limit: max_payload });
    }
    Ok(())
}

fn text(bytes: Bytes) -> Result<Inbound, InboundError> {
    ByteString::try_from(bytes).map(Inbound::Text).map_err(|_| InboundError::InvalidUtf8)
}

impl Stream for InboundFrames {
    type Item = Result<Inbound, InboundError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(error) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.unparsed.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(InboundError::Lost(error))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
