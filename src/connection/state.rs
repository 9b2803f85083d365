//! A connection's lifecycle, with every transition in this file.
//!
//! Two halves, because two kinds of owner change it:
//!
//! - [`CloseSignal`], shared by everyone who may close the connection (the session, the hub, a
//!   full outbox) and by the outbound body that sends the close frame. It holds the
//!   [`CloseCause`] asked for first, and only the first one counts: a close that answers an
//!   earlier one (the client's close frame after the server's, a reset after a close) changes
//!   nothing.
//! - [`ConnectionState`], the session actor's own: open, winding down (refusing new requests
//!   until the ones in flight are answered, for a drain or 3509), closed (with how it ended).
//!
//! ```text
//!            wind_down(1012 | 3509)                 end(cause, outbound)
//!   Open ───────────────────────────► WindingDown ───────────────────────► Closed { ending }
//!     └──────────────────────────────────────────────────────────────────►
//! ```
//!
//! How a connection ended (`agenticai_ws_connections_closed_total{code}` and the connection
//! record) follows from the first cause and from whether the outbound side got the close frame
//! out: see [`ConnectionState::end`].

use std::sync::OnceLock;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::protocol::{CloseCode, ErrorCode, Request, RequestError};

/// The close code recorded for a connection lost without a close frame (RFC 6455 7.1.5).
const ABNORMAL_CLOSURE: u16 = 1006;

/// Why a connection closes, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// The server closes it with this code (the session, the hub, or a full outbox decided).
    Server(CloseCode),
    /// The client sent a close frame, or ended its side of the stream.
    Client,
    /// The socket failed without a close frame (reset, network drop).
    Lost,
}

impl From<CloseCode> for CloseCause {
    fn from(code: CloseCode) -> Self {
        CloseCause::Server(code)
    }
}

impl CloseCause {
    /// The code of the close frame the server sends: its own, or 1000 to answer the client's
    /// (or to end a conversation nobody is reading any more).
    pub(crate) fn frame_code(self) -> CloseCode {
        match self {
            CloseCause::Server(code) => code,
            CloseCause::Client | CloseCause::Lost => CloseCode::Normal,
        }
    }

    /// The label of `agenticai_ws_connections_closed_total` and the record's `close_reason`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseCause::Server(code) => code.label(),
            CloseCause::Client => "client_closed",
            CloseCause::Lost => "connection_lost",
        }
    }

    /// The close code the connection record carries: 1006 (RFC 6455's "abnormal closure",
    /// never sent on the wire) for a connection that went away without a close frame.
    pub(crate) fn record_code(self) -> u16 {
        match self {
            CloseCause::Server(code) => code.code(),
            CloseCause::Client => CloseCode::Normal.code(),
            CloseCause::Lost => ABNORMAL_CLOSURE,
        }
    }
}

/// The first close asked for on a connection, and the wake-up of whoever waits for it (the
/// outbound body, to send the close frame at once even past a full queue; the session, to give
/// the body a deadline).
///
/// A `CancellationToken` wakes; the cause is set once, before it. (A `watch` channel would hold
/// both, but its eight notifiers cost about 340 bytes per connection against the token's 112.)
#[derive(Default)]
pub(crate) struct CloseSignal {
    cause: OnceLock<CloseCause>,
    asked: CancellationToken,
}

impl CloseSignal {
    /// Asks for the connection to close. Only the first cause counts; returns whether this was it.
    pub(crate) fn ask(&self, cause: CloseCause) -> bool {
        let first = self.cause.set(cause).is_ok();
        if first {
            // After the cause is set: whoever the token wakes finds it.
            self.asked.cancel();
        }
        first
    }

    /// The cause asked for first, once there is one. One atomic load: it is read on every push.
    pub(crate) fn cause(&self) -> Option<CloseCause> {
        self.cause.get().copied()
    }

    /// Resolves once a close has been asked for (at once if one was).
    pub(crate) fn asked(&self) -> WaitForCancellationFutureOwned {
        self.asked.clone().cancelled_owned()
    }
}

/// How the outbound side of a connection finished, as the session hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutboundEnd {
    /// The close frame was handed to the connection, or the session stopped waiting for that
    /// (a peer that reads nothing leaves the body unpolled).
    CloseDone,
    /// The connection went away before the close frame was handed over.
    ConnectionGone,
}

/// The session's side of the lifecycle (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectionState {
    /// Taking requests.
    Open,
    /// Closing with `code` once the requests in flight are answered: 1012 on a drain, 3509 for a
    /// client that keeps sending over its budget. New requests are refused meanwhile.
    WindingDown { code: CloseCode },
    /// The outbound side finished; the actor stops.
    Closed { ending: CloseCause },
}

impl ConnectionState {
    /// Whether the session looks at the client's text, binary and ping frames at all: not after
    /// the 3509 decision (the rest of the flood is dropped unanswered and uncounted) and not once
    /// closed.
    pub(crate) fn answers_frames(self) -> bool {
        match self {
            ConnectionState::Open => true,
            ConnectionState::WindingDown { code } => code != CloseCode::RateLimitExceeded,
            ConnectionState::Closed { .. } => false,
        }
    }

    /// Whether a request may run now: any while open; only `ping` while winding down (the
    /// others are answered `draining`). Nothing runs once closed.
    pub(crate) fn admits(self, request: &Request) -> Result<(), RequestError> {
        match (self, request) {
            (ConnectionState::Open, _) => Ok(()),
            (ConnectionState::WindingDown { .. }, Request::Ping) => Ok(()),
            (ConnectionState::WindingDown { .. }, _) => {
                Err(RequestError::new(ErrorCode::Draining, "The server is restarting; reconnect"))
            }
            (ConnectionState::Closed { .. }, _) => {
                Err(RequestError::new(ErrorCode::Draining, "This connection is closed"))
            }
        }
    }

    /// Starts winding down toward `code`. Only from open: the first decision stands (a drain
    /// after 3509 changes nothing), and a closed connection stays closed. Returns whether this
    /// call started it.
    pub(crate) fn wind_down(&mut self, code: CloseCode) -> bool {
        if *self != ConnectionState::Open {
            return false;
        }
        *self = ConnectionState::WindingDown { code };
        true
    }

    /// The close to ask for once no request is in flight: the wind-down's, if winding down.
    pub(crate) fn close_when_idle(self) -> Option<CloseCode> {
        match self {
            ConnectionState::WindingDown { code } => Some(code),
            ConnectionState::Open | ConnectionState::Closed { .. } => None,
        }
    }

    /// The outbound side finished: `cause` is the close asked for first (none if nobody asked).
    /// The client's close is the client's however the body ended; a server's close counts as
    /// such once its frame went out (or was given up on), and as lost if the connection went
    /// away first; with no cause, the connection was lost. Returns the ending, or None when
    /// already closed (the first report stands).
    pub(crate) fn end(&mut self, cause: Option<CloseCause>, outbound: OutboundEnd) -> Option<CloseCause> {
        if let ConnectionState::Closed { .. } = self {
            return None;
        }
        let ending = match (cause, outbound) {
            (Some(CloseCause::Client), _) => CloseCause::Client,
            (Some(CloseCause::Server(code)), OutboundEnd::CloseDone) => CloseCause::Server(code),
            (Some(CloseCause::Server(_) | CloseCause::Lost) | None, _) => CloseCause::Lost,
        };
        *self = ConnectionState::Closed { ending };
        Some(ending)
    }

    /// How the connection ended; a session stopped before its outbound side reported counts as
    /// lost.
    pub(crate) fn ending(self) -> CloseCause {
        match self {
            ConnectionState::Closed { ending } => ending,
            ConnectionState::Open | ConnectionState::WindingDown { .. } => CloseCause::Lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DRAIN: CloseCode = CloseCode::ServiceRestart;
    const FLOOD: CloseCode = CloseCode::RateLimitExceeded;

    fn unsubscribe() -> Request {
        Request::Unsubscribe { project_id: "p1".into() }
    }

    #[test]
    fn the_first_close_cause_counts() {
        let signal = CloseSignal::default();
        assert_eq!(signal.cause(), None);
        assert!(signal.ask(CloseCause::Server(CloseCode::SlowConsumer)));
        assert!(!signal.ask(CloseCause::Client));
        assert_eq!(signal.cause(), Some(CloseCause::Server(CloseCode::SlowConsumer)));
    }

    #[tokio::test]
    async fn asking_for_a_close_wakes_a_waiter_and_a_late_waiter_does_not_wait() {
        let signal = std::sync::Arc::new(CloseSignal::default());
        let waiter = tokio::spawn(signal.asked());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing asked yet");
        signal.ask(CloseCause::Lost);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("the waiter ran");
        tokio::time::timeout(Duration::from_secs(5), signal.asked()).await.expect("already asked");
    }

    #[test]
    fn a_close_frame_answers_the_client_with_1000_and_a_server_close_with_its_code() {
        assert_eq!(CloseCause::Client.frame_code(), CloseCode::Normal);
        assert_eq!(CloseCause::Lost.frame_code(), CloseCode::Normal);
        assert_eq!(CloseCause::Server(DRAIN).frame_code(), DRAIN);
    }

    #[test]
    fn endings_are_labelled_and_recorded_with_their_codes() {
        assert_eq!((CloseCause::Client.label(), CloseCause::Client.record_code()), ("client_closed", 1000));
        assert_eq!((CloseCause::Lost.label(), CloseCause::Lost.record_code()), ("connection_lost", 1006));
        assert_eq!(
            (CloseCause::Server(DRAIN).label(), CloseCause::Server(DRAIN).record_code()),
            ("1012_service_restart", 1012)
        );
    }

    #[test]
    fn open_takes_every_request() {
        let state = ConnectionState::Open;
        assert!(state.answers_frames());
        assert_eq!(state.admits(&unsubscribe()), Ok(()));
        assert_eq!(state.close_when_idle(), None);
    }

    #[test]
    fn winding_down_answers_only_ping_and_closes_with_its_code_when_idle() {
        let mut state = ConnectionState::Open;
        assert!(state.wind_down(DRAIN));
        assert!(state.answers_frames());
        assert_eq!(state.admits(&Request::Ping), Ok(()));
        assert_eq!(state.admits(&unsubscribe()).map_err(|error| error.code), Err(ErrorCode::Draining));
        assert_eq!(state.close_when_idle(), Some(DRAIN));
    }

    #[test]
    fn after_the_3509_decision_no_frame_is_read() {
        let mut state = ConnectionState::Open;
        assert!(state.wind_down(FLOOD));
        assert!(!state.answers_frames());
    }

    #[test]
    fn the_first_wind_down_stands() {
        let mut state = ConnectionState::Open;
        assert!(state.wind_down(FLOOD));
        assert!(!state.wind_down(DRAIN));
        assert_eq!(state, ConnectionState::WindingDown { code: FLOOD });
    }

    #[test]
    fn how_a_connection_ended() {
        use CloseCause::{Client, Lost, Server};
        use OutboundEnd::{CloseDone, ConnectionGone};
        let cases = [
            (Some(Server(DRAIN)), CloseDone, Server(DRAIN)),
            // The server's close never went out: the connection was gone before it.
            (Some(Server(DRAIN)), ConnectionGone, Lost),
            // The client closed first: the server's close frame only answers it.
            (Some(Client), CloseDone, Client),
            (Some(Client), ConnectionGone, Client),
            (Some(Lost), CloseDone, Lost),
            (Some(Lost), ConnectionGone, Lost),
            (None, ConnectionGone, Lost),
        ];
        for (cause, outbound, expected) in cases {
            let mut state = ConnectionState::Open;
            assert_eq!(state.end(cause, outbound), Some(expected), "{cause:?} then {outbound:?}");
            assert_eq!(state.ending(), expected);
        }
    }

    #[test]
    fn a_closed_connection_stays_closed() {
        let mut state = ConnectionState::Open;
        state.wind_down(DRAIN);
        assert_eq!(state.end(Some(CloseCause::Server(DRAIN)), OutboundEnd::CloseDone), Some(CloseCause::Server(DRAIN)));
        assert_eq!(state.end(None, OutboundEnd::ConnectionGone), None, "the first report stands");
        assert!(!state.wind_down(DRAIN));
        assert!(!state.answers_frames());
        assert!(state.admits(&Request::Ping).is_err());
        assert_eq!(state.close_when_idle(), None);
        assert_eq!(state.ending(), CloseCause::Server(DRAIN));
    }

    #[test]
    fn a_session_stopped_before_its_outbound_side_reported_counts_as_lost() {
        assert_eq!(ConnectionState::Open.ending(), CloseCause::Lost);
        assert_eq!(ConnectionState::WindingDown { code: DRAIN }.ending(), CloseCause::Lost);
    }
}
