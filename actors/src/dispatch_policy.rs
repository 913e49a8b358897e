//! Placeholder: the dispatch policy (being written).
