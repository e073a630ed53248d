//! [`Recent`]: the newest `cap` keys seen, to recognise an update, event
//! or notice that comes again. Bounded: `cap` keys, oldest forgotten first.
//!
//! Owns: nothing but the set. Must not import: any other module of metro.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// The newest `cap` keys seen, to recognise an update or event the
/// platform sends again.
#[derive(Debug)]
pub struct Recent<T> {
    cap: usize,
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: Hash + Eq + Clone> Recent<T> {
    pub fn new(cap: usize) -> Recent<T> {
        Recent {
            cap,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, key: &T) -> bool {
        self.set.contains(key)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn insert(&mut self, key: T) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_is_bounded() {
        let mut r = Recent::new(100);
        for i in 0..110u32 {
            r.insert(i);
        }
        assert_eq!(r.len(), 100);
        assert!(!r.contains(&0));
        assert!(r.contains(&109));
    }
}
