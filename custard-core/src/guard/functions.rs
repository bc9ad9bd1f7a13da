//! Function allow-lists per dialect.
