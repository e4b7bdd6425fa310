//! MQTT topic names, topic filters, and the trie that maps a policy's filters to
//! the group that owns them.
//!
//! Rules follow MQTT 3.1.1 §4.7 and MQTT 5 §4.7:
//! - names and filters are 1..=65535 bytes of UTF-8 without U+0000;
//! - `+` fills a whole level, `#` fills a whole level and is the last one;
//! - topic names carry no wildcards;
//! - a filter whose first level is a wildcard does not match a name whose first
//!   level starts with `$` (so `#` does not see `$SYS/...`);
//! - `a/#` also matches `a` (the parent level);
//! - a subscription `$share/<share name>/<filter>` subscribes to `<filter>`.
//!
//! On top of the spec, mqseal refuses control characters (U+0001..U+001F,
//! U+007F..U+009F) and Unicode noncharacters, as Mosquitto does, and caps policy
//! filters at [`MAX_POLICY_FILTER_LEVELS`] levels so that every walk of the trie
//! has a small, policy-bounded depth whatever a client sends.
//!
//! [`FilterTrie`] holds the filters of a policy, each with an owner (a group),
//! and refuses two filters of different owners that could both match one topic:
//! a topic must belong to at most one group, or the broker could not tell which
//! group's members may publish there.

// Seeded foldhash, not SipHash: these look-ups run several times per message,
// and their keys come from the policy (an attacker can only look up, never insert).
use foldhash::{HashMap, HashMapExt};
use std::ops::ControlFlow;

/// The longest topic MQTT can carry (a two-byte length prefix).
pub const MAX_TOPIC_BYTES: usize = 65535;

/// The deepest filter a policy may contain. Bounds the recursion of every trie walk.
pub const MAX_POLICY_FILTER_LEVELS: usize = 128;

/// A problem with a topic name, filter or shared subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty (MQTT topics need at least one character)")]
    Empty,
    #[error("is {0} bytes long; MQTT allows at most 65535")]
    TooLong(usize),
    #[error("contains U+0000, which MQTT forbids in topics")]
    Nul,
    #[error("contains control character U+{0:04X}, which MQTT says topics should not carry and Mosquitto refuses")]
    ControlCharacter(u32),
    #[error("contains the Unicode noncharacter U+{0:04X}, which Mosquitto refuses")]
    Noncharacter(u32),
    #[error("contains '{0}': wildcards are allowed in filters, not in topic names")]
    WildcardInName(char),
    #[error("level {level} is '{text}': '+' must be a whole level on its own")]
    PlusNotWholeLevel { level: usize, text: String },
    #[error("level {level} is '{text}': '#' must be a whole level on its own")]
    HashNotWholeLevel { level: usize, text: String },
    #[error("'#' must be the last level (found at level {level} of {levels})")]
    HashNotLast { level: usize, levels: usize },
    #[error("has {0} levels; policy filters may have at most {MAX_POLICY_FILTER_LEVELS}")]
    TooDeep(usize),
    #[error("is a shared subscription without a filter: expected $share/<share name>/<filter>")]
    ShareWithoutFilter,
    #[error("share name '{0}' must be non-empty and contain none of '/', '+', '#'")]
    BadShareName(String),
}

impl TopicError {
    /// A stable short token for logs and audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            TopicError::Empty => "topic-empty",
            TopicError::TooLong(_) => "topic-too-long",
            TopicError::Nul => "topic-nul",
            TopicError::ControlCharacter(_) => "topic-control-char",
            TopicError::Noncharacter(_) => "topic-noncharacter",
            TopicError::WildcardInName(_) => "topic-wildcard-in-name",
            TopicError::PlusNotWholeLevel { .. } => "filter-plus-not-whole-level",
            TopicError::HashNotWholeLevel { .. } => "filter-hash-not-whole-level",
            TopicError::HashNotLast { .. } => "filter-hash-not-last",
            TopicError::TooDeep(_) => "filter-too-deep",
            TopicError::ShareWithoutFilter => "share-without-filter",
            TopicError::BadShareName(_) => "share-bad-name",
        }
    }
}

fn check_text(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(text.len()));
    }
    for c in text.chars() {
        let cp = c as u32;
        if cp == 0 {
            return Err(TopicError::Nul);
        }
        if cp <= 0x1F || (0x7F..=0x9F).contains(&cp) {
            return Err(TopicError::ControlCharacter(cp));
        }
        if (0xFDD0..=0xFDEF).contains(&cp) || (cp & 0xFFFE) == 0xFFFE {
            return Err(TopicError::Noncharacter(cp));
        }
    }
    Ok(())
}

/// Checks a topic name (what a PUBLISH carries).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_text(name)?;
    if let Some(c) = name.chars().find(|c| *c == '+' || *c == '#') {
        return Err(TopicError::WildcardInName(c));
    }
    Ok(())
}

/// Checks a topic filter (what a SUBSCRIBE carries, without any `$share/` prefix).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_text(filter)?;
    let levels = filter.split('/').count();
    for (i, level) in filter.split('/').enumerate() {
        let number = i + 1;
        if level.contains('+') && level != "+" {
            return Err(TopicError::PlusNotWholeLevel { level: number, text: level.to_string() });
        }
        if level.contains('#') {
            if level != "#" {
                return Err(TopicError::HashNotWholeLevel { level: number, text: level.to_string() });
            }
            if number != levels {
                return Err(TopicError::HashNotLast { level: number, levels });
            }
        }
    }
    Ok(())
}

/// Checks a filter that goes into a policy: a valid filter, not a shared
/// subscription, and at most [`MAX_POLICY_FILTER_LEVELS`] levels deep.
pub fn validate_policy_filter(filter: &str) -> Result<(), TopicError> {
    validate_topic_filter(filter)?;
    let levels = filter.split('/').count();
    if levels > MAX_POLICY_FILTER_LEVELS {
        return Err(TopicError::TooDeep(levels));
    }
    Ok(())
}

/// A SUBSCRIBE filter, with the `$share/<name>/` prefix taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// The share name of a `$share/<name>/<filter>` subscription.
    pub share: Option<&'a str>,
    /// The filter that decides which topics are delivered.
    pub filter: &'a str,
}

/// Splits and validates a SUBSCRIBE filter. `$share/g/a/#` subscribes to `a/#`
/// (MQTT 5 §4.8.2; Mosquitto applies the same to 3.1.1 clients).
pub fn parse_subscription(text: &str) -> Result<Subscription<'_>, TopicError> {
    check_text(text)?;
    if let Some(rest) = text.strip_prefix("$share/") {
        let (share, filter) = rest.split_once('/').ok_or(TopicError::ShareWithoutFilter)?;
        if share.is_empty() || share.contains(['+', '#']) {
            return Err(TopicError::BadShareName(share.to_string()));
        }
        if filter.is_empty() {
            return Err(TopicError::ShareWithoutFilter);
        }
        validate_topic_filter(filter)?;
        return Ok(Subscription { share: Some(share), filter });
    }
    if text == "$share" {
        return Err(TopicError::ShareWithoutFilter);
    }
    validate_topic_filter(text)?;
    Ok(Subscription { share: None, filter: text })
}

/// True when `filter` matches topic `name` (both assumed valid). The reference
/// semantics the trie must agree with.
pub fn filter_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            // '#' matches what is left, including nothing ("a/#" matches "a").
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) => {
                if fl != nl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// If two filters can match one common topic name, returns such a topic.
/// Used to explain overlaps, and as the brute-force oracle in tests.
pub fn filters_intersect(a: &str, b: &str) -> Option<String> {
    let la: Vec<&str> = a.split('/').collect();
    let lb: Vec<&str> = b.split('/').collect();
    let mut example: Vec<String> = Vec::new();
    let mut i = 0;
    loop {
        match (la.get(i).copied(), lb.get(i).copied()) {
            (Some("#"), _) | (_, Some("#")) => {
                // The other filter's remaining levels (possibly none: "a/#" matches "a").
                let other = if la.get(i) == Some(&"#") { &lb } else { &la };
                let rest = other.get(i..).unwrap_or(&[]);
                if i == 0 && rest.first().is_some_and(|first| first.starts_with('$')) {
                    // A leading wildcard never matches a '$' topic.
                    return None;
                }
                for level in rest {
                    match *level {
                        "#" => break,
                        "+" => example.push("x".into()),
                        literal => example.push(literal.to_string()),
                    }
                }
                if example.is_empty() {
                    example.push("x".into());
                }
                return Some(example.join("/"));
            }
            (Some("+"), Some("+")) => example.push("x".into()),
            (Some("+"), Some(literal)) | (Some(literal), Some("+")) => {
                if i == 0 && literal.starts_with('$') {
                    return None;
                }
                example.push(literal.to_string());
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return None;
                }
                example.push(x.to_string());
            }
            (None, None) => return Some(example.join("/")),
            // One filter ended; the other continues with something other than a
            // lone '#' (handled above), so it needs more levels.
            (None, Some(_)) | (Some(_), None) => return None,
        }
        i += 1;
    }
}

const NONE: u32 = u32::MAX;

/// One node of the trie: the filters ending here, and the wildcard children.
#[derive(Debug, Clone)]
struct Node {
    /// Child for a `+` level.
    plus: u32,
    /// Filter (index into `filters`) that ends exactly at this node.
    end: u32,
    /// Filter whose next and last level is `#` (matches this node's path and below).
    hash: u32,
    /// Literal children as (label id, node), for walks that must enumerate them.
    children: Vec<(u32, u32)>,
}

impl Node {
    fn new() -> Self {
        Node { plus: NONE, end: NONE, hash: NONE, children: Vec::new() }
    }
}

/// A filter registered in the trie.
#[derive(Debug, Clone)]
struct Entry<T> {
    filter: Box<str>,
    owner: T,
}

/// Two filters of different owners that can match the same topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "topic filter '{filter}' overlaps '{other_filter}' of another group: both match e.g. '{example}'. \
     Every topic must belong to at most one group, otherwise the broker could not tell whose members may \
     publish or read there; narrow one of the filters"
)]
pub struct OverlapError<T: std::fmt::Debug> {
    pub filter: String,
    pub other_filter: String,
    pub other_owner: T,
    pub example: String,
}

/// What a walk of the trie reports for a subscription filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeHit<'t, T> {
    /// The subscription can receive topics owned by `owner` (via `filter`).
    Owner { owner: T, filter: &'t str },
    /// The subscription can receive topics that no filter owns.
    Unprotected,
}

/// Everything a subscription filter can reach, collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<T> {
    /// Owners whose topics the subscription can receive (deduplicated, in discovery order).
    pub owners: Vec<T>,
    /// The subscription can also receive topics no owner owns.
    pub spans_unprotected: bool,
}

/// Maps topic filters to owners (for the policy: group indices).
///
/// Labels are interned once; literal edges are found with one hash lookup per
/// level, so [`FilterTrie::owner_of`] costs O(depth) hash lookups and does not
/// allocate. A node is visited at most once per lookup (its path from the root
/// is fixed), so backtracking between a literal and a `+` child is bounded by
/// the size of the policy, never by what the client sends.
#[derive(Debug, Clone)]
pub struct FilterTrie<T> {
    labels: HashMap<Box<str>, u32>,
    label_text: Vec<Box<str>>,
    edges: HashMap<(u32, u32), u32>,
    nodes: Vec<Node>,
    filters: Vec<Entry<T>>,
}

impl<T: Copy + Eq + std::fmt::Debug> Default for FilterTrie<T> {
    fn default() -> Self {
        Self::new()
    }
}

const ROOT: u32 = 0;

impl<T: Copy + Eq + std::fmt::Debug> FilterTrie<T> {
    pub fn new() -> Self {
        FilterTrie {
            labels: HashMap::new(),
            label_text: Vec::new(),
            edges: HashMap::new(),
            nodes: vec![Node::new()],
            filters: Vec::new(),
        }
    }

    /// Number of filters held.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The filters with their owners, in insertion order.
    pub fn filters(&self) -> impl Iterator<Item = (&str, T)> {
        self.filters.iter().map(|e| (&*e.filter, e.owner))
    }

    /// Adds `filter` for `owner`. The filter must pass [`validate_policy_filter`]
    /// (checked again here), and must not overlap any filter of another owner.
    /// Overlaps between filters of the same owner are fine; an exact duplicate
    /// is accepted and ignored.
    pub fn insert(&mut self, filter: &str, owner: T) -> Result<(), InsertError<T>> {
        validate_policy_filter(filter).map_err(InsertError::Invalid)?;
        let mut conflict = None;
        self.walk_scope(filter, &mut |hit| {
            if let WalkHit::Filter(index) = hit {
                if self.filters[index as usize].owner != owner {
                    conflict = Some(index);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(index) = conflict {
            let other = &self.filters[index as usize];
            let example = filters_intersect(filter, &other.filter).unwrap_or_else(|| filter.to_string());
            return Err(InsertError::Overlap(OverlapError {
                filter: filter.to_string(),
                other_filter: other.filter.to_string(),
                other_owner: other.owner,
                example,
            }));
        }

        let levels: Vec<&str> = filter.split('/').collect();
        let mut node = ROOT;
        let index = self.filters.len() as u32;
        for (i, level) in levels.iter().enumerate() {
            match *level {
                "#" => {
                    debug_assert_eq!(i + 1, levels.len());
                    if self.nodes[node as usize].hash != NONE {
                        return Ok(()); // duplicate of a filter of the same owner
                    }
                    self.nodes[node as usize].hash = index;
                    self.filters.push(Entry { filter: filter.into(), owner });
                    return Ok(());
                }
                "+" => {
                    let next = self.nodes[node as usize].plus;
                    node = if next == NONE {
                        let created = self.new_node();
                        self.nodes[node as usize].plus = created;
                        created
                    } else {
                        next
                    };
                }
                literal => {
                    let label = self.intern(literal);
                    node = match self.edges.get(&(node, label)) {
                        Some(&child) => child,
                        None => {
                            let created = self.new_node();
                            self.edges.insert((node, label), created);
                            self.nodes[node as usize].children.push((label, created));
                            created
                        }
                    };
                }
            }
        }
        if self.nodes[node as usize].end != NONE {
            return Ok(());
        }
        self.nodes[node as usize].end = index;
        self.filters.push(Entry { filter: filter.into(), owner });
        Ok(())
    }

    /// Releases spare capacity once all filters are inserted.
    pub fn shrink_to_fit(&mut self) {
        self.labels.shrink_to_fit();
        self.label_text.shrink_to_fit();
        self.edges.shrink_to_fit();
        self.nodes.shrink_to_fit();
        for node in &mut self.nodes {
            node.children.shrink_to_fit();
        }
        self.filters.shrink_to_fit();
    }

    fn new_node(&mut self) -> u32 {
        self.nodes.push(Node::new());
        (self.nodes.len() - 1) as u32
    }

    fn intern(&mut self, label: &str) -> u32 {
        if let Some(&id) = self.labels.get(label) {
            return id;
        }
        let id = self.label_text.len() as u32;
        self.labels.insert(label.into(), id);
        self.label_text.push(label.into());
        id
    }

    /// The owner of topic `name`, or `None` when no filter matches it.
    /// `name` should be a valid topic name (the broker has checked it); on
    /// anything else the answer is still well-defined: wildcard characters are
    /// only ever compared as literal text.
    pub fn owner_of(&self, name: &str) -> Option<T> {
        self.filter_of(name).map(|i| self.filters[i as usize].owner)
    }

    /// The owner and the matching filter of topic `name`.
    pub fn owning_filter(&self, name: &str) -> Option<(T, &str)> {
        self.filter_of(name).map(|i| {
            let e = &self.filters[i as usize];
            (e.owner, &*e.filter)
        })
    }

    fn filter_of(&self, name: &str) -> Option<u32> {
        let dollar = name.starts_with('$');
        let root = &self.nodes[ROOT as usize];
        let mut levels = name.split('/');
        let first = levels.next()?;
        // Literal first levels match '$' topics; wildcards at the root do not.
        if let Some(found) = self.literal_child(ROOT, first).and_then(|n| self.find(n, levels.clone())) {
            return Some(found);
        }
        if dollar {
            return None;
        }
        if root.plus != NONE {
            if let Some(found) = self.find(root.plus, levels) {
                return Some(found);
            }
        }
        (root.hash != NONE).then_some(root.hash)
    }

    fn literal_child(&self, node: u32, label: &str) -> Option<u32> {
        let id = *self.labels.get(label)?;
        self.edges.get(&(node, id)).copied()
    }

    /// Finds a filter matching the rest of the topic from `node`, which has
    /// already consumed at least one level.
    fn find<'n>(&self, node: u32, mut rest: impl Iterator<Item = &'n str> + Clone) -> Option<u32> {
        let n = &self.nodes[node as usize];
        // 'x/#' matches x itself and everything below.
        if n.hash != NONE {
            return Some(n.hash);
        }
        let Some(level) = rest.next() else {
            return (n.end != NONE).then_some(n.end);
        };
        if let Some(child) = self.literal_child(node, level) {
            if let Some(found) = self.find(child, rest.clone()) {
                return Some(found);
            }
        }
        if n.plus != NONE {
            return self.find(n.plus, rest);
        }
        None
    }

    /// Everything a subscription filter (already stripped of `$share/`) can
    /// reach: the owners of topics it can match, and whether it can match a
    /// topic nobody owns. `visit` may stop the walk early.
    pub fn visit_scope<'t>(&'t self, filter: &str, visit: &mut dyn FnMut(ScopeHit<'t, T>) -> ControlFlow<()>) {
        self.walk_scope(filter, &mut |hit| match hit {
            WalkHit::Filter(i) => {
                let e = &self.filters[i as usize];
                visit(ScopeHit::Owner { owner: e.owner, filter: &e.filter })
            }
            WalkHit::Uncovered => visit(ScopeHit::Unprotected),
        });
    }

    /// Collects the full scope of a subscription filter.
    pub fn scope(&self, filter: &str) -> Scope<T> {
        let mut scope = Scope { owners: Vec::new(), spans_unprotected: false };
        self.visit_scope(filter, &mut |hit| {
            match hit {
                ScopeHit::Owner { owner, .. } => {
                    if !scope.owners.contains(&owner) {
                        scope.owners.push(owner);
                    }
                }
                ScopeHit::Unprotected => scope.spans_unprotected = true,
            }
            ControlFlow::Continue(())
        });
        scope
    }

    fn walk_scope(&self, filter: &str, visit: &mut dyn FnMut(WalkHit) -> ControlFlow<()>) {
        let levels: Vec<&str> = filter.split('/').collect();
        let _ = self.walk(&levels, &[ROOT], true, visit);
    }

    /// The simultaneous walk of subscription levels `s` and the trie.
    ///
    /// `nodes` are the trie nodes whose paths equal the concrete topic prefix
    /// chosen so far (several, because a literal and a `+` can both match).
    /// At the root (`at_root`) no level is consumed yet.
    fn walk(
        &self,
        s: &[&str],
        nodes: &[u32],
        at_root: bool,
        visit: &mut dyn FnMut(WalkHit) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if !at_root {
            // A '#' child covers this prefix and every extension of it; all filters
            // below agree on its owner (the no-overlap invariant), so stop here.
            if let Some(&n) = nodes.iter().find(|&&n| self.nodes[n as usize].hash != NONE) {
                return visit(WalkHit::Filter(self.nodes[n as usize].hash));
            }
        }
        let Some((&level, rest)) = s.split_first() else {
            // The subscription's topic ends here.
            let mut covered = false;
            for &n in nodes.iter() {
                let end = self.nodes[n as usize].end;
                if end != NONE {
                    covered = true;
                    visit(WalkHit::Filter(end))?;
                }
            }
            if !covered {
                visit(WalkHit::Uncovered)?;
            }
            return ControlFlow::Continue(());
        };
        match level {
            "#" => {
                // Zero further levels (not at the root: a topic has a level), then
                // one or more: '+' followed by '#'.
                if !at_root {
                    self.walk(&[], nodes, false, visit)?;
                }
                self.walk_any_label(&["#"], nodes, at_root, visit)
            }
            "+" => self.walk_any_label(rest, nodes, at_root, visit),
            literal => {
                let dollar = at_root && literal.starts_with('$');
                let mut next = Vec::with_capacity(nodes.len() * 2);
                for &n in nodes.iter() {
                    if let Some(child) = self.literal_child(n, literal) {
                        next.push(child);
                    }
                    if !dollar {
                        let plus = self.nodes[n as usize].plus;
                        if plus != NONE {
                            next.push(plus);
                        }
                    }
                }
                if at_root && !dollar && self.nodes[ROOT as usize].hash != NONE {
                    return visit(WalkHit::Filter(self.nodes[ROOT as usize].hash));
                }
                self.continue_with(rest, next, visit)
            }
        }
    }

    /// A `+` level of the subscription: try every literal label the trie knows
    /// at these nodes, and one fresh label no filter names.
    fn walk_any_label(
        &self,
        rest: &[&str],
        nodes: &[u32],
        at_root: bool,
        visit: &mut dyn FnMut(WalkHit) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // A subscription starting with a wildcard never sees '$' topics, so the
        // root's '#' covers every label it can choose.
        if at_root && self.nodes[ROOT as usize].hash != NONE {
            return visit(WalkHit::Filter(self.nodes[ROOT as usize].hash));
        }
        // The fresh label first: it decides "spans unprotected" cheaply.
        let fresh: Vec<u32> = nodes
            .iter()
            .map(|&n| self.nodes[n as usize].plus)
            .filter(|&p| p != NONE)
            .collect();
        self.continue_with(rest, fresh, visit)?;

        // One node (the common case): walk its children in place. Collecting,
        // sorting and deduplicating every label first made `site/+/#` cost
        // 140 µs at 100,000 groups, although the verdict is usually decided at
        // the first child (docs/PERFORMANCE.md, Scale).
        if let [n] = nodes {
            let node = &self.nodes[*n as usize];
            for &(label, child) in &node.children {
                if at_root && self.label_text[label as usize].starts_with('$') {
                    continue;
                }
                let next = if node.plus != NONE { vec![child, node.plus] } else { vec![child] };
                self.continue_with(rest, next, visit)?;
            }
            return ControlFlow::Continue(());
        }

        // Several nodes: a label may continue from more than one of them; visit
        // each label once with every node it continues from.
        let mut labels: Vec<u32> = Vec::new();
        for &n in nodes.iter() {
            for &(label, _) in &self.nodes[n as usize].children {
                if at_root && self.label_text[label as usize].starts_with('$') {
                    continue;
                }
                labels.push(label);
            }
        }
        labels.sort_unstable();
        labels.dedup();
        for label in labels {
            let mut next = Vec::with_capacity(nodes.len() * 2);
            for &n in nodes.iter() {
                if let Some(&child) = self.edges.get(&(n, label)) {
                    next.push(child);
                }
                let plus = self.nodes[n as usize].plus;
                if plus != NONE {
                    next.push(plus);
                }
            }
            self.continue_with(rest, next, visit)?;
        }
        ControlFlow::Continue(())
    }

    fn continue_with(
        &self,
        rest: &[&str],
        mut next: Vec<u32>,
        visit: &mut dyn FnMut(WalkHit) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if next.is_empty() {
            // No filter continues along this topic. It is unowned unless the
            // subscription itself cannot go on (it can: every valid level list
            // matches at least one concrete topic).
            return visit(WalkHit::Uncovered);
        }
        next.sort_unstable();
        next.dedup();
        self.walk(rest, &next, false, visit)
    }
}

#[derive(Debug, Clone, Copy)]
enum WalkHit {
    Filter(u32),
    Uncovered,
}

/// Why a filter could not be added to a [`FilterTrie`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError<T: std::fmt::Debug> {
    #[error("{0}")]
    Invalid(TopicError),
    #[error("{0}")]
    Overlap(OverlapError<T>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters_follow_mqtt_rules() {
        assert!(validate_topic_name("a/b/c").is_ok());
        assert!(validate_topic_name("/").is_ok(), "empty levels are legal");
        assert!(validate_topic_name("$SYS/broker/uptime").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName('+')));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName('#')));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(validate_topic_name("a\u{7}"), Err(TopicError::ControlCharacter(7)));
        assert_eq!(validate_topic_name("a\u{FFFF}"), Err(TopicError::Noncharacter(0xFFFF)));
        assert_eq!(validate_topic_name(&"x".repeat(65536)), Err(TopicError::TooLong(65536)));
        assert!(validate_topic_name(&"x".repeat(65535)).is_ok());

        for ok in ["#", "+", "a/+/b", "a/#", "+/+", "/#", "$SYS/#"] {
            assert!(validate_topic_filter(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            validate_topic_filter("a/b+/c"),
            Err(TopicError::PlusNotWholeLevel { level: 2, text: "b+".into() })
        );
        assert_eq!(validate_topic_filter("a/#/c"), Err(TopicError::HashNotLast { level: 2, levels: 3 }));
        assert_eq!(validate_topic_filter("a#"), Err(TopicError::HashNotWholeLevel { level: 1, text: "a#".into() }));
        let deep = vec!["a"; MAX_POLICY_FILTER_LEVELS + 1].join("/");
        assert!(validate_topic_filter(&deep).is_ok());
        assert_eq!(validate_policy_filter(&deep), Err(TopicError::TooDeep(MAX_POLICY_FILTER_LEVELS + 1)));
    }

    #[test]
    fn shared_subscriptions_are_taken_apart() {
        assert_eq!(
            parse_subscription("$share/g1/a/+/c").unwrap(),
            Subscription { share: Some("g1"), filter: "a/+/c" }
        );
        assert_eq!(parse_subscription("$share/g1/#").unwrap().filter, "#");
        assert_eq!(parse_subscription("a/#").unwrap(), Subscription { share: None, filter: "a/#" });
        assert_eq!(parse_subscription("$share/g1"), Err(TopicError::ShareWithoutFilter));
        assert_eq!(parse_subscription("$share/g1/"), Err(TopicError::ShareWithoutFilter));
        assert_eq!(parse_subscription("$share"), Err(TopicError::ShareWithoutFilter));
        assert_eq!(parse_subscription("$share//a"), Err(TopicError::BadShareName(String::new())));
        assert_eq!(parse_subscription("$share/+/a"), Err(TopicError::BadShareName("+".into())));
        assert!(matches!(parse_subscription("$share/g/a/#/b"), Err(TopicError::HashNotLast { .. })));
        // "$sharex/..." is an ordinary filter.
        assert_eq!(parse_subscription("$sharex/a").unwrap().share, None);
    }

    #[test]
    fn matching_reference_semantics() {
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(!filter_matches("a/+", "a"));
        assert!(filter_matches("a/+", "a/"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(filter_matches("+/+", "/x"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(filter_matches("a/$x", "a/$x"));
        assert!(filter_matches("a/+", "a/$x"), "only the first level is special");
    }

    #[test]
    fn intersection_examples() {
        assert_eq!(filters_intersect("a/+", "a/b").as_deref(), Some("a/b"));
        assert_eq!(filters_intersect("a/#", "a").as_deref(), Some("a"));
        assert_eq!(filters_intersect("+/b/#", "a/+/c").as_deref(), Some("a/b/c"));
        assert_eq!(filters_intersect("#", "#").as_deref(), Some("x"));
        assert_eq!(filters_intersect("a/+", "a/b/c"), None);
        assert_eq!(filters_intersect("#", "$SYS/x"), None);
        assert_eq!(filters_intersect("+/x", "$SYS/+"), None);
        assert_eq!(filters_intersect("$SYS/#", "$SYS/+").as_deref(), Some("$SYS/x"));
    }

    #[test]
    fn owner_lookup() {
        let mut t = FilterTrie::new();
        t.insert("plant/hall1/#", 1u32).unwrap();
        t.insert("site/+/cmd", 2).unwrap();
        t.insert("fleet/+/telemetry", 3).unwrap();
        t.insert("fleet/dev9/config", 4).unwrap();
        t.insert("$SYS/mqseal/#", 5).unwrap();
        assert_eq!(t.owner_of("plant/hall1"), Some(1));
        assert_eq!(t.owner_of("plant/hall1/x/y"), Some(1));
        assert_eq!(t.owner_of("site/hall2/cmd"), Some(2));
        assert_eq!(t.owner_of("site/hall2/cmd/x"), None);
        assert_eq!(t.owner_of("plant/hall2/cmd"), None);
        assert_eq!(t.owner_of("fleet/dev9/telemetry"), Some(3));
        assert_eq!(t.owner_of("fleet/dev9/config"), Some(4));
        assert_eq!(t.owner_of("fleet/dev9"), None);
        assert_eq!(t.owner_of("$SYS/mqseal/x"), Some(5));
        assert_eq!(t.owner_of("$SYS/other"), None);
        assert_eq!(t.owning_filter("site/x/cmd"), Some((2, "site/+/cmd")));
    }

    #[test]
    fn dollar_topics_escape_root_wildcards() {
        let mut t = FilterTrie::new();
        t.insert("#", 1u32).unwrap();
        t.insert("$SYS/#", 2).unwrap(); // no overlap with '#'
        assert_eq!(t.owner_of("anything/here"), Some(1));
        assert_eq!(t.owner_of("$SYS/x"), Some(2));
        assert_eq!(t.owner_of("$other"), None);
        let mut t = FilterTrie::new();
        t.insert("+/status", 1u32).unwrap();
        assert_eq!(t.owner_of("$SYS/status"), None);
        assert_eq!(t.owner_of("dev/status"), Some(1));
    }

    #[test]
    fn overlapping_groups_are_refused_with_an_explanation() {
        let mut t = FilterTrie::new();
        t.insert("a/+/c", 1u32).unwrap();
        t.insert("a/b/#", 1).unwrap(); // same owner may overlap
        let err = t.insert("a/b/c", 2).unwrap_err();
        let InsertError::Overlap(overlap) = err else { panic!("{err:?}") };
        assert_eq!(overlap.example, "a/b/c");
        assert_eq!(overlap.other_owner, 1);
        let text = overlap.to_string();
        assert!(text.starts_with("topic filter 'a/b/c' overlaps 'a/"), "{text}");
        assert!(text.contains("both match e.g. 'a/b/c'") && text.contains("at most one group"), "{text}");
        assert!(matches!(t.insert("#", 2), Err(InsertError::Overlap(_))));
        assert!(matches!(t.insert("a/#", 2), Err(InsertError::Overlap(_))));
        t.insert("a/b", 2).unwrap_err(); // 'a/b/#' matches 'a/b'
        t.insert("a/x", 2).unwrap();
        t.insert("$SYS/#", 3).unwrap();
        assert!(matches!(t.insert("a/b+", 3), Err(InsertError::Invalid(_))));
    }

    #[test]
    fn subscription_scope() {
        let mut t = FilterTrie::new();
        t.insert("g1/#", 1u32).unwrap();
        t.insert("dev/+/tele", 2).unwrap();
        t.insert("dev/d7/cmd", 3).unwrap();
        t.insert("$SYS/mq/#", 4).unwrap();
        let s = |f: &str| {
            let mut sc = t.scope(f);
            sc.owners.sort();
            sc
        };
        assert_eq!(s("#"), Scope { owners: vec![1, 2, 3], spans_unprotected: true });
        assert_eq!(s("g1/#"), Scope { owners: vec![1], spans_unprotected: false });
        assert_eq!(s("g1"), Scope { owners: vec![1], spans_unprotected: false });
        assert_eq!(s("g1/+/+"), Scope { owners: vec![1], spans_unprotected: false });
        assert_eq!(s("dev/+/tele"), Scope { owners: vec![2], spans_unprotected: false });
        assert_eq!(s("dev/d7/+"), Scope { owners: vec![2, 3], spans_unprotected: true });
        assert_eq!(s("dev/+/cmd"), Scope { owners: vec![3], spans_unprotected: true });
        assert_eq!(s("+/+/tele"), Scope { owners: vec![1, 2], spans_unprotected: true });
        assert_eq!(s("+/d7/+"), Scope { owners: vec![1, 2, 3], spans_unprotected: true });
        assert_eq!(s("$SYS/#"), Scope { owners: vec![4], spans_unprotected: true });
        assert_eq!(s("$SYS/mq/x"), Scope { owners: vec![4], spans_unprotected: false });
        assert_eq!(s("other/x"), Scope { owners: vec![], spans_unprotected: true });
        // Early exit: stop at the first hit.
        let mut hits = 0;
        t.visit_scope("#", &mut |_| {
            hits += 1;
            ControlFlow::Break(())
        });
        assert_eq!(hits, 1);
    }

    #[test]
    fn root_hash_covers_all_but_dollar() {
        let mut t = FilterTrie::new();
        t.insert("#", 1u32).unwrap();
        assert_eq!(t.scope("#"), Scope { owners: vec![1], spans_unprotected: false });
        assert_eq!(t.scope("+/a"), Scope { owners: vec![1], spans_unprotected: false });
        assert_eq!(t.scope("$SYS/#"), Scope { owners: vec![], spans_unprotected: true });
    }

    /// Small deterministic generator (xorshift) for the oracle tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    const LITERALS: [&str; 4] = ["a", "b", "$s", ""];

    fn random_filter(rng: &mut Rng) -> String {
        let depth = 1 + rng.next(3);
        let mut levels = Vec::new();
        for i in 0..depth {
            let choice = rng.next(7);
            let level = match choice {
                0..=3 => LITERALS[choice],
                4 | 5 => "+",
                _ => "#",
            };
            levels.push(level);
            if level == "#" || (i == depth - 1 && rng.next(4) == 0) {
                break;
            }
        }
        if levels.last() != Some(&"#") && rng.next(5) == 0 {
            levels.push("#");
        }
        let filter = levels.join("/");
        if filter.is_empty() {
            "a".to_string()
        } else {
            filter
        }
    }

    /// Every topic over the literals plus one fresh label, up to `depth` levels.
    fn universe(depth: usize) -> Vec<String> {
        let alphabet = ["a", "b", "$s", "", "zz"];
        let mut all: Vec<Vec<&str>> = alphabet.iter().map(|l| vec![*l]).collect();
        let mut frontier = all.clone();
        for _ in 1..depth {
            let mut next = Vec::new();
            for t in &frontier {
                for l in alphabet {
                    let mut u = t.clone();
                    u.push(l);
                    next.push(u);
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all.into_iter().map(|l| l.join("/")).collect()
    }

    #[test]
    fn trie_agrees_with_brute_force() {
        let topics = universe(5);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _round in 0..300 {
            let mut trie = FilterTrie::new();
            let mut accepted: Vec<(String, u32)> = Vec::new();
            for _ in 0..(1 + rng.next(6)) {
                let filter = random_filter(&mut rng);
                let owner = rng.next(3) as u32;
                let expect_conflict =
                    accepted.iter().any(|(f, o)| *o != owner && filters_intersect(f, &filter).is_some());
                let result = trie.insert(&filter, owner);
                assert_eq!(result.is_err(), expect_conflict, "{filter} for {owner} into {accepted:?}: {result:?}");
                if result.is_ok() {
                    accepted.push((filter, owner));
                }
            }
            for topic in &topics {
                let expect = accepted.iter().find(|(f, _)| filter_matches(f, topic)).map(|(_, o)| *o);
                assert_eq!(trie.owner_of(topic), expect, "{topic} in {accepted:?}");
            }
            for _ in 0..8 {
                let sub = random_filter(&mut rng);
                let mut expect_owners: Vec<u32> = accepted
                    .iter()
                    .filter(|(f, _)| filters_intersect(f, &sub).is_some())
                    .map(|(_, o)| *o)
                    .collect();
                expect_owners.sort();
                expect_owners.dedup();
                let expect_spans = topics
                    .iter()
                    .any(|t| filter_matches(&sub, t) && !accepted.iter().any(|(f, _)| filter_matches(f, t)));
                let mut got = trie.scope(&sub);
                got.owners.sort();
                assert_eq!(got.owners, expect_owners, "owners of {sub} in {accepted:?}");
                assert_eq!(got.spans_unprotected, expect_spans, "spans of {sub} in {accepted:?}");
            }
        }
    }
}
