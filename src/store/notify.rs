//! How changes travel from a store to the [`KeyRing`](crate::KeyRing)s in front of it: a bounded
//! channel that turns overflow into [`ChangeEvent::Resync`], the text form of events on the wire, and
//! the listener loop shared by the backends that notify other nodes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use super::{ChangeEvent, ChangeStream};

/// Events a slow reader may fall behind by before it is told to resync instead.
const CHANGE_BUFFER: usize = 4096;

/// The writing end of a [`ChangeStream`].
#[derive(Debug)]
pub(crate) struct ChangeSender {
    tx: mpsc::Sender<ChangeEvent>,
    lost: Arc<AtomicBool>,
}

/// A bounded channel of change events: the stream and its sender.
pub(crate) fn change_channel() -> (ChangeSender, ChangeStream) {
    let (tx, rx) = mpsc::channel(CHANGE_BUFFER);
    let lost = Arc::new(AtomicBool::new(false));
    (
        ChangeSender {
            tx,
            lost: lost.clone(),
        },
        Box::pin(ChangeReceiver { rx, lost }),
    )
}

impl ChangeSender {
    /// Queues `event` without waiting. When the reader is too far behind, the event is dropped and the
    /// reader gets a [`ChangeEvent::Resync`] next, so nothing is lost silently. `false` once the
    /// reader is gone.
    pub(crate) fn send(&self, event: ChangeEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A full queue has items the reader will come back for, and it checks the flag first.
                self.lost.store(true, Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the reader is gone.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves once the reader is gone.
    #[cfg(any(feature = "postgres", feature = "redis"))]
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

struct ChangeReceiver {
    rx: mpsc::Receiver<ChangeEvent>,
    lost: Arc<AtomicBool>,
}

impl Stream for ChangeReceiver {
    type Item = ChangeEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChangeEvent>> {
        let this = self.get_mut();
        // Resync before the queued events: clearing first and applying them after is never stale.
        if this.lost.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(ChangeEvent::Resync));
        }
        this.rx.poll_recv(cx)
    }
}

#[cfg(feature = "redis")]
pub(crate) use remote::encode_event;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) use remote::{subscribe, Notifier, Subscription, Timing};

#[cfg(any(feature = "postgres", feature = "redis"))]
mod remote {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::mpsc;
    use tokio::time::{sleep, sleep_until, Instant};

    use super::{change_channel, ChangeEvent, ChangeSender, ChangeStream};
    use crate::identity::Status;
    use crate::key::KeyId;
    use crate::store::StoreError;

    // PostgreSQL's triggers write payloads themselves; only Redis (and the tests) encode here.
    #[cfg(any(test, feature = "redis"))]
    /// Longest payload sent as is; PostgreSQL refuses payloads of 8000 bytes or more. Longer events
    /// (only possible with huge user or company ids) go out as `resync`.
    const MAX_PAYLOAD: usize = 7900;

    /// Payloads that only check the channel is alive start with this.
    const PING: &str = "ping:";

    #[cfg(any(test, feature = "redis"))]
    /// The text form of `event` on the wire: `key:<id>`, `deleted:<id>`, `user:<uid>:<status>`,
    /// `company:<id>:<status>` or `resync`.
    pub(crate) fn encode_event(event: &ChangeEvent) -> String {
        let text = match event {
            ChangeEvent::Key(id) => format!("key:{id}"),
            ChangeEvent::KeyDeleted(id) => format!("deleted:{id}"),
            ChangeEvent::User { user_uid, status } => {
                format!("user:{user_uid}:{}", status.as_str())
            }
            ChangeEvent::Company { company_id, status } => {
                format!("company:{company_id}:{}", status.as_str())
            }
            ChangeEvent::Resync => "resync".to_owned(),
        };
        if text.len() > MAX_PAYLOAD {
            "resync".to_owned()
        } else {
            text
        }
    }

    /// Reads [`encode_event`]'s form. Anything else (a newer version's event, a damaged payload) is
    /// [`ChangeEvent::Resync`]: a node that cannot tell what changed forgets everything.
    pub(crate) fn decode_event(payload: &str) -> ChangeEvent {
        let id = |raw: &str| raw.parse::<u64>().ok().and_then(KeyId::new);
        // Ids may contain ':'; status names do not, so the status is after the last one.
        let owner = |rest: &str| {
            let (id, status) = rest.rsplit_once(':')?;
            Some((id.to_owned(), Status::parse(status)?))
        };
        let event = if let Some(raw) = payload.strip_prefix("key:") {
            id(raw).map(ChangeEvent::Key)
        } else if let Some(raw) = payload.strip_prefix("deleted:") {
            id(raw).map(ChangeEvent::KeyDeleted)
        } else if let Some(rest) = payload.strip_prefix("user:") {
            owner(rest).map(|(user_uid, status)| ChangeEvent::User { user_uid, status })
        } else if let Some(rest) = payload.strip_prefix("company:") {
            owner(rest).map(|(company_id, status)| ChangeEvent::Company { company_id, status })
        } else {
            None
        };
        event.unwrap_or(ChangeEvent::Resync)
    }

    /// An open subscription to a store's change channel: payloads arrive on `payloads`, fed by a
    /// reader task that ends (closing the channel) when the connection is lost.
    pub(crate) struct Subscription {
        pub(crate) payloads: mpsc::UnboundedReceiver<String>,
        pub(crate) reader: tokio::task::AbortHandle,
    }

    impl Drop for Subscription {
        fn drop(&mut self) {
            self.reader.abort();
        }
    }

    /// A backend's change channel, for the listener loop.
    #[async_trait]
    pub(crate) trait Notifier: Send + Sync + 'static {
        /// Opens a new connection and subscribes it to the change channel.
        async fn listen(&self) -> Result<Subscription, StoreError>;
        /// Sends `payload` on the change channel through the store's ordinary connections.
        async fn publish(&self, payload: &str) -> Result<(), StoreError>;
    }

    /// Timings of the listener loop.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Timing {
        /// First wait before reconnecting; doubles on each failure.
        pub(crate) min_backoff: Duration,
        /// Longest wait before reconnecting: while the channel is down, the ring forgets what it
        /// cached at least this often.
        pub(crate) max_backoff: Duration,
        /// How often the loop sends itself a ping.
        pub(crate) heartbeat: Duration,
        /// How long a ping may take to come back before the connection counts as lost.
        pub(crate) heartbeat_timeout: Duration,
    }

    impl Timing {
        pub(crate) const DEFAULT: Timing = Timing {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(5),
        };
    }

    /// The change stream of a notifying store: a task keeps one subscription open, turns payloads
    /// into events and, whenever events may have been missed (first connection, connection lost,
    /// a ping that did not come back, each failed reconnect), sends [`ChangeEvent::Resync`]. The task
    /// ends when the stream is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn subscribe<N: Notifier>(notifier: N, timing: Timing) -> ChangeStream {
        let (tx, stream) = change_channel();
        tokio::spawn(async move {
            tokio::select! {
                () = tx.closed() => {}
                () = run(&notifier, &tx, timing) => {}
            }
        });
        stream
    }

    async fn run<N: Notifier>(notifier: &N, tx: &ChangeSender, timing: Timing) {
        let mut backoff = timing.min_backoff;
        loop {
            let listening = tokio::time::timeout(timing.heartbeat_timeout, notifier.listen()).await;
            if let Ok(Ok(subscription)) = listening {
                // Changes made before the subscription was in place were not heard.
                if !tx.send(ChangeEvent::Resync) {
                    return;
                }
                backoff = timing.min_backoff;
                if !listen(notifier, subscription, tx, timing).await {
                    return;
                }
            }
            if !tx.send(ChangeEvent::Resync) {
                return;
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(timing.max_backoff);
        }
    }

    /// Forwards events until the subscription is lost (`true`) or the reader is gone (`false`).
    async fn listen<N: Notifier>(
        notifier: &N,
        mut subscription: Subscription,
        tx: &ChangeSender,
        timing: Timing,
    ) -> bool {
        let mut token = [0u8; 8];
        // Without randomness all loops share a token; any node's ping then proves the channel works,
        // which is still the property checked.
        let _ = getrandom::fill(&mut token);
        let token = u64::from_le_bytes(token);
        let mut sent: u64 = 0;
        let mut awaiting: Option<String> = None;
        let mut deadline = Instant::now() + timing.heartbeat;
        loop {
            tokio::select! {
                payload = subscription.payloads.recv() => {
                    let Some(payload) = payload else { return true };
                    if payload.starts_with(PING) {
                        if awaiting.as_deref() == Some(payload.as_str()) {
                            awaiting = None;
                            deadline = Instant::now() + timing.heartbeat;
                        }
                        continue;
                    }
                    if !tx.send(decode_event(&payload)) {
                        return false;
                    }
                }
                () = sleep_until(deadline) => {
                    if awaiting.is_some() {
                        return true;
                    }
                    sent += 1;
                    let ping = format!("{PING}{token:016x}:{sent}");
                    let published = tokio::time::timeout(timing.heartbeat_timeout, notifier.publish(&ping)).await;
                    if !matches!(published, Ok(Ok(()))) {
                        return true;
                    }
                    awaiting = Some(ping);
                    deadline = Instant::now() + timing.heartbeat_timeout;
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::VecDeque;
        use std::future::poll_fn;
        use std::pin::Pin;
        use std::sync::{Arc, Mutex};

        use futures_core::Stream;

        use super::*;

        #[test]
        fn events_round_trip_through_their_text_form() {
            let id = KeyId::new(42).expect("valid");
            let events = [
                ChangeEvent::Key(id),
                ChangeEvent::KeyDeleted(id),
                ChangeEvent::User {
                    user_uid: "u:with:colons".into(),
                    status: Status::DisabledDueToTenant,
                },
                ChangeEvent::Company {
                    company_id: "c-1".into(),
                    status: Status::Unknown,
                },
                ChangeEvent::Resync,
            ];
            for event in events {
                assert_eq!(decode_event(&encode_event(&event)), event);
            }
            assert_eq!(encode_event(&ChangeEvent::Key(id)), "key:42");
            assert_eq!(
                encode_event(&ChangeEvent::User {
                    user_uid: "u1".into(),
                    status: Status::Disabled
                }),
                "user:u1:disabled"
            );
        }

        #[test]
        fn unreadable_payloads_and_huge_ids_mean_resync() {
            for payload in [
                "",
                "key:",
                "key:0",
                "key:x",
                "key:18446744073709551615",
                "user:u1",
                "user:u1:bogus",
                "company",
                "hello",
            ] {
                assert_eq!(decode_event(payload), ChangeEvent::Resync, "{payload}");
            }
            let huge = ChangeEvent::User {
                user_uid: "u".repeat(8000),
                status: Status::Disabled,
            };
            assert_eq!(encode_event(&huge), "resync");
        }

        /// A notifier driven by the test: each `listen` takes the next scripted outcome.
        #[derive(Clone, Default)]
        struct Scripted {
            state: Arc<Mutex<ScriptState>>,
        }

        #[derive(Default)]
        struct ScriptState {
            outcomes: VecDeque<bool>,
            feeds: Vec<mpsc::UnboundedSender<String>>,
            echo: bool,
            listens: usize,
        }

        #[async_trait]
        impl Notifier for Scripted {
            async fn listen(&self) -> Result<Subscription, StoreError> {
                let mut state = self.state.lock().expect("lock");
                state.listens += 1;
                if !state.outcomes.pop_front().unwrap_or(true) {
                    return Err(StoreError::backend("refused"));
                }
                let (tx, rx) = mpsc::unbounded_channel();
                state.feeds.push(tx);
                let reader = tokio::spawn(std::future::pending::<()>()).abort_handle();
                Ok(Subscription {
                    payloads: rx,
                    reader,
                })
            }

            async fn publish(&self, payload: &str) -> Result<(), StoreError> {
                let state = self.state.lock().expect("lock");
                if state.echo {
                    for feed in &state.feeds {
                        let _ = feed.send(payload.to_owned());
                    }
                }
                Ok(())
            }
        }

        impl Scripted {
            fn feed(&self, payload: &str) {
                let state = self.state.lock().expect("lock");
                let feed = state.feeds.last().expect("subscribed");
                feed.send(payload.to_owned()).expect("loop listens");
            }

            fn drop_connection(&self) {
                self.state.lock().expect("lock").feeds.clear();
            }
        }

        async fn next(stream: &mut ChangeStream) -> ChangeEvent {
            poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx))
                .await
                .expect("stream goes on")
        }

        const FAST: Timing = Timing {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            heartbeat: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(5),
        };

        #[tokio::test(start_paused = true)]
        async fn a_lost_connection_means_resync_before_and_after_reconnecting() {
            let notifier = Scripted::default();
            notifier.state.lock().expect("lock").outcomes = [true, false, false, true].into();
            notifier.state.lock().expect("lock").echo = true;
            let mut stream = subscribe(notifier.clone(), FAST);
            // Whatever happened before the first subscription is unknown.
            assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            notifier.feed("key:7");
            assert_eq!(
                next(&mut stream).await,
                ChangeEvent::Key(KeyId::new(7).expect("valid"))
            );
            notifier.drop_connection();
            // Lost, then two refused reconnects, each a resync, then subscribed again.
            for _ in 0..4 {
                assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            }
            assert_eq!(notifier.state.lock().expect("lock").listens, 4);
            notifier.feed("deleted:7");
            assert_eq!(
                next(&mut stream).await,
                ChangeEvent::KeyDeleted(KeyId::new(7).expect("valid"))
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_ping_that_does_not_come_back_means_resync_and_a_new_connection() {
            let notifier = Scripted::default();
            let mut stream = subscribe(notifier.clone(), FAST);
            assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            // Pings are published but never heard: after heartbeat + timeout the loop reconnects.
            assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            assert_eq!(notifier.state.lock().expect("lock").listens, 2);
        }

        #[tokio::test(start_paused = true)]
        async fn pings_that_come_back_keep_the_connection() {
            let notifier = Scripted::default();
            notifier.state.lock().expect("lock").echo = true;
            let mut stream = subscribe(notifier.clone(), FAST);
            assert_eq!(next(&mut stream).await, ChangeEvent::Resync);
            tokio::time::sleep(Duration::from_secs(60)).await;
            notifier.feed("key:9");
            assert_eq!(
                next(&mut stream).await,
                ChangeEvent::Key(KeyId::new(9).expect("valid")),
                "no resync: every ping came back"
            );
            assert_eq!(notifier.state.lock().expect("lock").listens, 1);
        }

        #[tokio::test]
        async fn the_loop_ends_when_the_stream_is_dropped() {
            let notifier = Scripted::default();
            let stream = subscribe(notifier.clone(), FAST);
            while notifier.state.lock().expect("lock").feeds.is_empty() {
                tokio::task::yield_now().await;
            }
            drop(stream);
            for _ in 0..100 {
                if notifier.state.lock().expect("lock").feeds[0].is_closed() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("the listener loop outlived its stream");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;
    use crate::key::KeyId;

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_one_resync() {
        let (tx, mut stream) = change_channel();
        let id = KeyId::new(1).expect("valid");
        for _ in 0..CHANGE_BUFFER + 10 {
            assert!(tx.send(ChangeEvent::Key(id)));
        }
        async fn next(stream: &mut ChangeStream) -> Option<ChangeEvent> {
            poll_fn(|cx| stream.as_mut().poll_next(cx)).await
        }
        assert_eq!(next(&mut stream).await, Some(ChangeEvent::Resync));
        for _ in 0..CHANGE_BUFFER {
            assert_eq!(next(&mut stream).await, Some(ChangeEvent::Key(id)));
        }
        drop(tx);
        assert_eq!(next(&mut stream).await, None);
    }

    #[test]
    fn a_sender_knows_when_its_reader_is_gone() {
        let (tx, stream) = change_channel();
        drop(stream);
        assert!(!tx.send(ChangeEvent::Resync));
    }
}
