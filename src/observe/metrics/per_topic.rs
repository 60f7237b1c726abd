//! Values resolved once per topic and found again on the hot paths, and
//! counting records in runs of one topic.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Values resolved per topic, looked up by the topic's `Arc<str>`: records
/// of one topic come in runs and share one, so the last topic asked is
/// found by pointer; another (or the same name in another `Arc`) by a hash
/// of its name.
pub(crate) struct PerTopic<T> {
    values: Vec<(Arc<str>, T)>,
    index: FxHashMap<Arc<str>, usize>,
    /// Where the topic asked last is in `values`.
    last: usize,
}

impl<T> Default for PerTopic<T> {
    fn default() -> Self {
        PerTopic {
            values: Vec::new(),
            index: FxHashMap::default(),
            last: 0,
        }
    }
}

impl<T> PerTopic<T> {
    /// The value of `topic`, made by `make` the first time.
    #[inline]
    pub(crate) fn get(&mut self, topic: &Arc<str>, make: impl FnOnce(&str) -> T) -> &mut T {
        let hit = self
            .values
            .get(self.last)
            .is_some_and(|(t, _)| Arc::ptr_eq(t, topic));
        if !hit {
            self.last = self.find(topic, make);
        }
        &mut self.values[self.last].1
    }

    /// Where `topic`'s value is, made by `make` if there is none yet: out
    /// of line, as a run of records of one topic asks once.
    #[cold]
    #[inline(never)]
    fn find(&mut self, topic: &Arc<str>, make: impl FnOnce(&str) -> T) -> usize {
        match self.index.get(topic) {
            Some(&i) => i,
            None => {
                self.values.push((topic.clone(), make(topic)));
                self.index.insert(topic.clone(), self.values.len() - 1);
                self.values.len() - 1
            }
        }
    }

    /// Every value made so far.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.values.iter_mut().map(|(_, value)| value)
    }
}

/// Counts records by topic in runs of one topic (a batch is mostly such
/// runs): `add(topic, n)` once per run.
pub(crate) fn count_runs<'a>(
    topics: impl Iterator<Item = &'a Arc<str>>,
    mut add: impl FnMut(&Arc<str>, u64),
) {
    let mut run: Option<(&Arc<str>, u64)> = None;
    for topic in topics {
        match &mut run {
            Some((current, n)) if Arc::ptr_eq(current, topic) => *n += 1,
            _ => {
                if let Some((current, n)) = run.take() {
                    add(current, n);
                }
                run = Some((topic, 1));
            }
        }
    }
    if let Some((current, n)) = run {
        add(current, n);
    }
}
