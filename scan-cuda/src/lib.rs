//! scan-cuda: placeholder.
