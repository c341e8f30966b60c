//! Which tasks want which change: tasks select a table (in the configured
//! database, or `db.table`) and a set of events. The source asks
//! [`Router::wants_table`] before decoding rows, so tables nobody wants cost
//! nothing.

use std::collections::HashMap;

/// Name → value, hashed with foldhash: looked up twice per change, and the
/// keys come from the config, so a fast hasher is safe (SipHash was 4% of a
/// catch-up read).
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

use crate::config::{EventKind, TaskConfig};
use crate::event::{Change, ChangeKind};

#[derive(Debug, Clone, Copy)]
struct Route {
    task: usize,
    insert: bool,
    update: bool,
    delete: bool,
}

/// Routing table built once from the configured tasks.
#[derive(Debug, Default, Clone)]
pub struct Router {
    /// database → table → routes.
    by_table: Map<Map<Vec<Route>>>,
}

impl Router {
    /// `default_db` is `database.database`, used for tasks whose `table_name` has no `db.` part.
    pub fn new(tasks: &[TaskConfig], default_db: &str) -> Self {
        let mut by_table: Map<Map<Vec<Route>>> = Map::default();
        for (i, t) in tasks.iter().enumerate() {
            let db = t.database.clone().unwrap_or_else(|| default_db.to_string());
            let has = |k: EventKind| t.events.contains(&k);
            by_table
                .entry(db)
                .or_default()
                .entry(t.table_name.clone())
                .or_default()
                .push(Route {
                    task: i,
                    insert: has(EventKind::Insert),
                    update: has(EventKind::Update),
                    delete: has(EventKind::Delete),
                });
        }
        Router { by_table }
    }

    /// Every (database, table) some task wants, sorted.
    pub fn tables(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .by_table
            .iter()
            .flat_map(|(db, tables)| tables.keys().map(move |t| (db.clone(), t.clone())))
            .collect();
        v.sort();
        v
    }

    /// Whether any task wants changes of `db`.`table`.
    pub(crate) fn wants_table(&self, db: &str, table: &str) -> bool {
        self.by_table
            .get(db)
            .is_some_and(|tables| tables.contains_key(table))
    }

    /// Indexes (into the task list) of the tasks that want `change`, in config order.
    pub(crate) fn tasks_for<'a>(&'a self, change: &Change) -> impl Iterator<Item = usize> + 'a {
        let kind = change.kind;
        self.by_table
            .get(&*change.table.database)
            .and_then(|tables| tables.get(&*change.table.name))
            .into_iter()
            .flatten()
            .filter(move |r| match kind {
                ChangeKind::Insert => r.insert,
                ChangeKind::Update => r.update,
                ChangeKind::Delete => r.delete,
            })
            .map(|r| r.task)
    }
}
