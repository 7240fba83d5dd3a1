//! The one queue of messages to delete on the server in this session.
//!
//! A message joins it only once the journal says it is delivered: when its
//! batch is committed, when it was delivered by an earlier poll and is now
//! due (`delete = <duration>`), or when it is a server copy of content
//! already delivered. DELEs go out among the RETRs still coming, and the
//! rest after the last one; the server deletes nothing before `+OK` to
//! `QUIT`, and only then may the journal forget the keys.

use crate::journal::Key;
use crate::pop3::{self, Retrieval, Session};
use crate::tls::Stream;

/// Messages to delete, in the order they were queued, and how many of
/// them have been sent as DELE.
#[derive(Debug, Default)]
pub(super) struct Deletes {
    /// (message number, journal key).
    queued: Vec<(u32, Key)>,
    sent: usize,
}

impl Deletes {
    /// Queue message `n`, delivered under `key`.
    pub fn push(&mut self, n: u32, key: Key) {
        self.queued.push((n, key));
    }

    /// Send what is queued into a running retrieval, among the RETRs still
    /// coming, so the server does that work now rather than at the end. The
    /// retrieval may take fewer than all (it bounds DELEs in flight); the
    /// rest go with the next call.
    pub fn send_during(
        &mut self,
        retrieval: &mut Retrieval<'_, Stream>,
    ) -> Result<(), pop3::Error> {
        let unsent = self.unsent();
        self.sent += retrieval.delete(&unsent)?;
        Ok(())
    }

    /// Send everything not sent yet, once no RETR is outstanding.
    pub fn send_rest(
        &mut self,
        session: &mut Session<Stream>,
        pipelining: bool,
    ) -> Result<(), pop3::Error> {
        let unsent = self.unsent();
        if !unsent.is_empty() {
            session.dele_many(&unsent, pipelining)?;
        }
        self.sent = self.queued.len();
        Ok(())
    }

    /// After `+OK` to QUIT: the keys of the messages the server deleted.
    pub fn into_keys(self) -> Vec<Key> {
        self.queued.into_iter().map(|(_, k)| k).collect()
    }

    /// How many messages are queued.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    fn unsent(&self) -> Vec<u32> {
        self.queued[self.sent..].iter().map(|(n, _)| *n).collect()
    }
}
