//! How changes travel from a store to the [`KeyRing`](crate::KeyRing)s in front of it: a bounded
//! channel that turns overflow into [`ChangeEvent::Resync`].

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
