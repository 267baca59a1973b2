//! Owners of recent inferences and episodes, in memory.
//!
//! Feedback often arrives seconds after the answer, before the write-ahead
//! log shipped the inference to ClickHouse, so authorization cannot rely on
//! ClickHouse alone. This index remembers the last `capacity` inferences
//! (and the episodes they belong to), within `max_bytes` of memory (the
//! episode ids are the client's); older ones are looked up in ClickHouse.
//! On start it is refilled from the unshipped log.
//!
//! Episode ids are the clients', so two tenants may use the same one: an
//! episode is keyed by (tenant, episode id), and looked up for one tenant
//! only ([`RecentInferences::tenant_episode`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::Mutex;

/// Who an inference belongs to, and where it was routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: Arc<str>,
    pub route: Arc<str>,
    pub variant: Arc<str>,
    pub episode_id: Option<Arc<str>>,
}

struct Inner {
    inferences: HashMap<u128, Owner>,
    /// Owner of each (tenant, episode) (its first indexed inference), with
    /// the number of indexed inferences that reference it (removed at zero).
    episodes: HashMap<EpisodeKey, (Owner, u32)>,
    order: VecDeque<u128>,
    /// Sum of [`cost`] over `inferences`.
    bytes: usize,
}

pub struct RecentInferences {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// What an entry is charged beyond its strings: its slots in the maps and
/// the queue and the `Arc` headers. An estimate: it need only grow with
/// what is stored, so that `max_bytes` bounds the memory within a factor.
const ENTRY_OVERHEAD: usize = 192;

/// Estimated bytes an indexed inference holds (its episode's entry
/// included: the episode id is shared).
fn cost(owner: &Owner) -> usize {
    ENTRY_OVERHEAD
        + owner.tenant.len()
        + owner.route.len()
        + owner.variant.len()
        + owner.episode_id.as_ref().map_or(0, |e| e.len())
}

/// (tenant, episode id).
type EpisodeKey = (Arc<str>, Arc<str>);

fn episode_key(owner: &Owner) -> Option<EpisodeKey> {
    owner
        .episode_id
        .as_ref()
        .map(|ep| (owner.tenant.clone(), ep.clone()))
}

fn key(id: &str) -> Option<u128> {
    uuid::Uuid::parse_str(id).ok().map(|u| u.as_u128())
}

impl RecentInferences {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            inner: Mutex::new(Inner {
                inferences: HashMap::new(),
                episodes: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    pub fn insert(&self, id: &str, owner: Owner) {
        let Some(k) = key(id) else { return };
        let mut inner = self.inner.lock();
        if let Some(ep) = episode_key(&owner) {
            inner
                .episodes
                .entry(ep)
                .or_insert_with(|| (owner.clone(), 0))
                .1 += 1;
        }
        inner.bytes += cost(&owner);
        match inner.inferences.insert(k, owner) {
            None => inner.order.push_back(k),
            Some(replaced) => inner.bytes = inner.bytes.saturating_sub(cost(&replaced)),
        }
        while inner.order.len() > self.capacity || inner.bytes > self.max_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(o) = inner.inferences.remove(&old) {
                inner.bytes = inner.bytes.saturating_sub(cost(&o));
                if let Some(ep) = episode_key(&o) {
                    let gone = inner.episodes.get_mut(&ep).map(|e| {
                        e.1 -= 1;
                        e.1 == 0
                    });
                    if gone == Some(true) {
                        inner.episodes.remove(&ep);
                    }
                }
            }
        }
    }

    pub fn inference(&self, id: &str) -> Option<Owner> {
        let k = key(id)?;
        self.inner.lock().inferences.get(&k).cloned()
    }

    /// Tenant, route and variant of the first indexed inference of
    /// `tenant`'s episode `id`; another tenant's episode with the same id is
    /// never returned.
    pub fn tenant_episode(&self, tenant: &str, id: &str) -> Option<Owner> {
        let k: EpisodeKey = (Arc::from(tenant), Arc::from(id));
        self.inner
            .lock()
            .episodes
            .get(&k)
            .map(|(owner, _)| owner.clone())
    }
}

impl From<flywheel_feedback::InferenceOwner> for Owner {
    fn from(o: flywheel_feedback::InferenceOwner) -> Self {
        Self {
            tenant: o.tenant.into(),
            route: o.route.into(),
            variant: o.variant.into(),
            episode_id: o.episode_id.map(Arc::from),
        }
    }
}

/// Indexes the inferences of the log segments not shipped yet (`keys`
/// opens sealed segments: the log's keyring).
pub fn index_unshipped(
    wal_dir: &std::path::Path,
    keys: Option<&flywheel_feedback::wal::Keyring>,
    recent: &RecentInferences,
) {
    let Ok(segments) = flywheel_feedback::wal::list_segments(wal_dir) else {
        return;
    };
    let mut n = 0usize;
    for (_, path) in segments {
        let Ok(contents) = flywheel_feedback::wal::read_segment(&path, keys) else {
            continue;
        };
        for record in contents.records {
            if let flywheel_feedback::Record::Inference(e) = record {
                let owner = Owner {
                    tenant: e.tenant.into(),
                    route: e.route.into(),
                    variant: e.variant.into(),
                    episode_id: e.episode_id.map(Arc::from),
                };
                recent.insert(&e.id, owner);
                n += 1;
            }
        }
    }
    if n > 0 {
        tracing::info!(inferences = n, "indexed unshipped inferences from the log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(t: &str, ep: Option<&str>) -> Owner {
        Owner {
            tenant: t.into(),
            route: "r".into(),
            variant: "v".into(),
            episode_id: ep.map(Arc::from),
        }
    }

    #[test]
    fn memory_is_bounded_by_bytes_whatever_the_episode_ids() {
        let r = RecentInferences::new(1_000_000, 64 * 1024);
        let ids: Vec<String> = (0..2_000)
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            r.insert(id, owner("t", Some(&format!("{i}:{}", "e".repeat(250)))));
        }
        let inner = r.inner.lock();
        assert!(inner.bytes <= 64 * 1024, "{} bytes", inner.bytes);
        let kept = inner.inferences.len();
        assert!(kept > 50 && kept < 2_000, "{kept} kept");
        assert_eq!(inner.episodes.len(), kept, "evicted episodes go too");
        drop(inner);
        assert!(
            r.inference(ids.last().unwrap()).is_some(),
            "the newest stays"
        );
        assert!(r.inference(&ids[0]).is_none(), "the oldest goes");
    }

    #[test]
    fn evicts_oldest_and_its_episode() {
        let r = RecentInferences::new(2, usize::MAX);
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        r.insert(&ids[0], owner("a", Some("ep1")));
        r.insert(&ids[1], owner("b", None));
        assert_eq!(r.tenant_episode("a", "ep1").unwrap().tenant.as_ref(), "a");
        r.insert(&ids[2], owner("c", None));
        assert!(r.inference(&ids[0]).is_none());
        assert!(r.tenant_episode("a", "ep1").is_none());
        assert_eq!(r.inference(&ids[2]).unwrap().tenant.as_ref(), "c");
        assert!(r.inference("not-a-uuid").is_none());
    }

    #[test]
    fn episodes_are_per_tenant_whoever_used_the_id_first() {
        let r = RecentInferences::new(100, usize::MAX);
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        // Tenant b claims the id first: a's episode is still a's.
        r.insert(&ids[0], owner("b", Some("shared")));
        r.insert(&ids[1], owner("a", Some("shared")));
        assert_eq!(
            r.tenant_episode("a", "shared").unwrap().tenant.as_ref(),
            "a"
        );
        assert_eq!(
            r.tenant_episode("b", "shared").unwrap().tenant.as_ref(),
            "b"
        );
        assert!(r.tenant_episode("c", "shared").is_none());
        // Each tenant's entry is counted and evicted on its own.
        let r = RecentInferences::new(1, usize::MAX);
        r.insert(&ids[0], owner("b", Some("shared")));
        r.insert(&ids[1], owner("a", Some("shared")));
        assert!(r.tenant_episode("b", "shared").is_none());
        assert_eq!(
            r.tenant_episode("a", "shared").unwrap().tenant.as_ref(),
            "a"
        );
        assert_eq!(r.inner.lock().episodes.len(), 1);
    }
}
