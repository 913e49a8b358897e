//! Placeholder: the geo index (being written).
