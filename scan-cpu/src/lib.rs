//! scan-cpu: placeholder.
