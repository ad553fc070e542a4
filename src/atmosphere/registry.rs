//! Connections of this node by session id (Atmosphere tracking id).
use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;
use parking_lot::Mutex;

use super::connection::Connection;
use super::messages::Close;

/// Shared handle; lookups happen once per request, never per delivered message.
#[derive(Clone, Default)]
pub struct ConnectionRegistry {
    inner: Arc<Mutex<HashMap<Arc<str>, Entry>>>,
}

struct Entry {
    /// The topic the connection belongs to: a tracking id presented on another path is a
    /// different logical client.
    topic: Arc<str>,
    /// The signed-in user it was created for (session ids are bound to it).
    user: Option<Arc<str>>,
    addr: Addr<Connection>,
}

impl ConnectionRegistry {
    /// The live connection with `id`, if any.
    pub fn get(&self, id: &str) -> Option<Addr<Connection>> {
        let map = self.inner.lock();
        map.get(id)
            .map(|e| &e.addr)
            .filter(|a| a.connected())
            .cloned()
    }

    /// The topic of the live connection with `id`, if any.
    pub fn topic_of(&self, id: &str) -> Option<Arc<str>> {
        let map = self.inner.lock();
        map.get(id)
            .filter(|e| e.addr.connected())
            .map(|e| e.topic.clone())
    }

    /// The live connection with `id`, or a new one made by `start` (which must not block).
    /// The flag says whether it was created now.
    pub fn get_or_start(
        &self,
        id: &Arc<str>,
        topic: &str,
        user: Option<&str>,
        start: impl FnOnce() -> Addr<Connection>,
    ) -> (Addr<Connection>, bool) {
        let mut map = self.inner.lock();
        if let Some(entry) = map.get(id).filter(|e| e.addr.connected()) {
            if &*entry.topic == topic {
                return (entry.addr.clone(), false);
            }
            // The same id on another topic: the old client moved; let it go.
            entry.addr.do_send(Close);
        }
        let addr = start();
        map.insert(
            id.clone(),
            Entry {
                topic: topic.into(),
                user: user.map(Into::into),
                addr: addr.clone(),
            },
        );
        (addr, true)
    }

    /// Forget `id` if it still maps to `addr` (a newer connection may have replaced it).
    pub fn remove(&self, id: &str, addr: &Addr<Connection>) {
        let mut map = self.inner.lock();
        if map.get(id).is_some_and(|e| e.addr == *addr) {
            map.remove(id);
        }
    }

    /// The live connections matching `select(id, topic, user)`, with their ids.
    pub fn select(
        &self,
        select: impl Fn(&str, &str, Option<&str>) -> bool,
    ) -> Vec<(Arc<str>, Addr<Connection>)> {
        let map = self.inner.lock();
        map.iter()
            .filter(|(id, e)| e.addr.connected() && select(id, &e.topic, e.user.as_deref()))
            .map(|(id, e)| (id.clone(), e.addr.clone()))
            .collect()
    }

    /// Every live connection (for operator actions).
    pub fn all(&self) -> Vec<Addr<Connection>> {
        self.inner.lock().values().map(|e| e.addr.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }
}
