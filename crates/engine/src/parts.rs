//! Where the builder keeps the settings of the parts of an engine's setup that live in crates
//! above the engine ([`EnginePart`](crate::EnginePart): a store backend to open, the admin server
//! to start), and where the engine keeps what those parts leave with it (extensions).
//!
//! One settings value per part type, changed by any number of calls in any order
//! ([`EngineBuilder::part`](crate::EngineBuilder::part)): a setting given before another is never
//! dropped by the order of the calls. This module knows nothing of the engine; `engine.rs` says
//! what a part does.

use std::any::{Any, TypeId};
use std::collections::HashMap;

use parking_lot::RwLock;

/// One part's settings while the builder collects them, and how to turn them into the part.
struct Collected<Part: ?Sized> {
    settings: Box<dyn Any + Send>,
    into_part: Box<dyn FnOnce(Box<dyn Any + Send>) -> Box<Part> + Send>,
}

/// The parts a builder collected, one settings value per type, in the order each was first
/// changed; `Part` is the trait object every part is at the end (`dyn EnginePart`).
pub(crate) struct Parts<Part: ?Sized> {
    collected: Vec<(TypeId, Collected<Part>)>,
}

impl<Part: ?Sized> Default for Parts<Part> {
    fn default() -> Self {
        Parts { collected: Vec::new() }
    }
}

impl<Part: ?Sized + 'static> Parts<Part> {
    /// Changes the settings of part `P`, created from `P::default()` on first use; `into_part`
    /// makes the finished settings a `Part` (a coercion: `|part| part`).
    pub(crate) fn change<P: Default + Send + 'static>(
        &mut self,
        into_part: fn(Box<P>) -> Box<Part>,
        change: impl FnOnce(&mut P),
    ) {
        let id = TypeId::of::<P>();
        let index = match self.collected.iter().position(|(kind, _)| *kind == id) {
            Some(index) => index,
            None => {
                let into_part = Box::new(move |settings: Box<dyn Any + Send>| match settings.downcast::<P>() {
                    Ok(part) => into_part(part),
                    // `change` stores a `P` under `P`'s type id only.
                    Err(_) => unreachable!("a part's settings are stored under their own type"),
                });
                self.collected.push((
                    id,
                    Collected {
                        settings: Box::new(P::default()),
                        into_part,
                    },
                ));
                self.collected.len() - 1
            }
        };
        if let Some(settings) = self.collected[index].1.settings.downcast_mut::<P>() {
            change(settings);
        }
    }

    /// The parts, in the order each was first changed.
    pub(crate) fn into_parts(self) -> Vec<Box<Part>> {
        self.collected
            .into_iter()
            .map(|(_, collected)| (collected.into_part)(collected.settings))
            .collect()
    }
}

/// Values kept with an engine by the parts above it, one per type.
#[derive(Default)]
pub(crate) struct Extensions {
    values: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Extensions {
    pub(crate) fn set<T: Send + Sync + 'static>(&self, value: T) {
        self.values.write().insert(TypeId::of::<T>(), Box::new(value));
    }

    pub(crate) fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.values
            .read()
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Named {
        fn name(&self) -> String;
    }

    #[derive(Default)]
    struct Counting {
        calls: Vec<&'static str>,
    }
    impl Named for Counting {
        fn name(&self) -> String {
            format!("counting {}", self.calls.join(" "))
        }
    }

    #[derive(Default)]
    struct Other;
    impl Named for Other {
        fn name(&self) -> String {
            "other".to_string()
        }
    }

    #[test]
    fn a_part_changed_twice_keeps_both_changes_and_its_first_place() {
        let mut parts = Parts::<dyn Named>::default();
        parts.change(|part| part, |part: &mut Counting| part.calls.push("first"));
        parts.change(|part| part, |_: &mut Other| {});
        parts.change(|part| part, |part: &mut Counting| part.calls.push("second"));
        let names: Vec<String> = parts.into_parts().iter().map(|part| part.name()).collect();
        assert_eq!(names, ["counting first second", "other"]);
    }

    #[test]
    fn an_extension_is_found_by_its_type_and_replaced_by_a_later_one() {
        let extensions = Extensions::default();
        assert_eq!(extensions.get::<u16>(), None);
        extensions.set(7u16);
        extensions.set(8u16);
        extensions.set("other type");
        assert_eq!(extensions.get::<u16>(), Some(8));
        assert_eq!(extensions.get::<&str>(), Some("other type"));
    }
}
