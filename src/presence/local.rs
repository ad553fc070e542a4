//! One node's members of its topics: per topic, each user's connections here (ordered by user
//! id, for pages) and the anonymous ones.
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use super::{Count, Member, Page, Stats};
use crate::topic::TopicId;

/// The members this node holds.
#[derive(Default)]
pub struct Local {
    topics: HashMap<TopicId, Topic>,
}

#[derive(Default)]
struct Topic {
    users: BTreeMap<Arc<str>, Entry>,
    anonymous: u64,
    clients: u64,
}

struct Entry {
    clients: u64,
    info: Option<Arc<Value>>,
}

impl Local {
    /// One more connection of `user` (empty: anonymous) in `topic`; returns whether the user
    /// was not a member here before.
    pub fn add(&mut self, topic: &TopicId, user: &Arc<str>, info: Option<Arc<Value>>) -> bool {
        let members = self.topics.entry(topic.clone()).or_default();
        members.clients += 1;
        if user.is_empty() {
            members.anonymous += 1;
            return false;
        }
        let entry = members.users.entry(user.clone()).or_insert(Entry {
            clients: 0,
            info: None,
        });
        entry.clients += 1;
        if info.is_some() {
            entry.info = info;
        }
        entry.clients == 1
    }

    /// One connection of `user` fewer in `topic`; returns whether that was the user's last
    /// one here.
    pub fn remove(&mut self, topic: &str, user: &str) -> bool {
        let Some(members) = self.topics.get_mut(topic) else {
            return false;
        };
        members.clients = members.clients.saturating_sub(1);
        let mut left = false;
        if user.is_empty() {
            members.anonymous = members.anonymous.saturating_sub(1);
        } else if let Some(entry) = members.users.get_mut(user) {
            entry.clients -= 1;
            if entry.clients == 0 {
                members.users.remove(user);
                left = true;
            }
        }
        if members.clients == 0 {
            self.topics.remove(topic);
        }
        left
    }

    /// What this node holds for `user` in `topic` (zero once it left).
    pub fn count(&self, topic: &TopicId, user: &Arc<str>) -> Count {
        let members = self.topics.get(topic);
        let (clients, info) = match members {
            None => (0, None),
            Some(m) if user.is_empty() => (m.anonymous, None),
            Some(m) => m
                .users
                .get(user)
                .map_or((0, None), |e| (e.clients, e.info.clone())),
        };
        Count {
            topic: topic.clone(),
            user: user.clone(),
            clients,
            info,
        }
    }

    pub fn stats(&self, topic: &str) -> Stats {
        self.topics
            .get(topic)
            .map_or_else(Stats::default, |m| Stats {
                users: m.users.len() as u64,
                clients: m.clients,
            })
    }

    pub fn page(&self, topic: &str, after: Option<&str>, limit: usize) -> Page {
        let Some(members) = self.topics.get(topic) else {
            return Page::default();
        };
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut range = members
            .users
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(user, entry)| Member {
                user: user.to_string(),
                info: entry.info.as_deref().cloned(),
            });
        let members: Vec<Member> = range.by_ref().take(limit).collect();
        let cursor = match range.next() {
            Some(_) => members.last().map(|m| m.user.clone()),
            None => None,
        };
        Page { members, cursor }
    }

    /// Every (topic, user) this node holds, the anonymous clients of each topic as user `""`.
    pub fn keys(&self) -> Vec<(TopicId, Arc<str>)> {
        let mut keys = Vec::new();
        for (topic, members) in &self.topics {
            if members.anonymous > 0 {
                keys.push((topic.clone(), Arc::from("")));
            }
            keys.extend(members.users.keys().map(|u| (topic.clone(), u.clone())));
        }
        keys
    }

    pub fn here(&self, topic: &str) -> BTreeMap<String, u64> {
        self.topics.get(topic).map_or_else(BTreeMap::new, |m| {
            m.users
                .iter()
                .map(|(user, e)| (user.to_string(), e.clients))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(page: &Page) -> Vec<&str> {
        page.members.iter().map(|m| m.user.as_str()).collect()
    }

    #[test]
    fn several_connections_of_a_user_are_one_member_until_the_last_leaves() {
        let mut local = Local::default();
        let topic: TopicId = "/room".into();
        let alice: Arc<str> = "alice".into();
        let anonymous: Arc<str> = "".into();
        let info = Some(Arc::new(serde_json::json!({"name": "Alice"})));
        assert!(local.add(&topic, &alice, info.clone()), "a new member");
        assert!(!local.add(&topic, &alice, None), "the same member");
        assert!(!local.add(&topic, &anonymous, None), "anonymous: no member");
        assert_eq!(
            local.stats("/room"),
            Stats {
                users: 1,
                clients: 3
            }
        );
        assert_eq!(local.count(&topic, &alice).clients, 2);
        assert_eq!(
            local.count(&topic, &alice).info,
            info,
            "the first info stays"
        );
        local.remove("/room", "alice");
        assert_eq!(
            local.stats("/room"),
            Stats {
                users: 1,
                clients: 2
            }
        );
        local.remove("/room", "alice");
        local.remove("/room", "");
        assert_eq!(local.stats("/room"), Stats::default());
        assert_eq!(local.count(&topic, &alice).clients, 0);
        assert!(local.topics.is_empty(), "an empty topic is forgotten");
    }

    #[test]
    fn pages_walk_the_members_in_user_order_and_end() {
        let mut local = Local::default();
        let topic: TopicId = "/big".into();
        for n in (0..25).rev() {
            local.add(&topic, &Arc::from(format!("user{n:02}")), None);
        }
        let first = local.page("/big", None, 10);
        assert_eq!(users(&first)[..2], ["user00", "user01"]);
        assert_eq!(first.cursor.as_deref(), Some("user09"));
        let second = local.page("/big", first.cursor.as_deref(), 10);
        assert_eq!(users(&second)[0], "user10");
        let third = local.page("/big", second.cursor.as_deref(), 10);
        assert_eq!(users(&third).len(), 5);
        assert_eq!(third.cursor, None, "the last page says so");
        assert_eq!(local.page("/none", None, 10), Page::default());
    }
}
