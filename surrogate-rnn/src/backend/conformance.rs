//! The conformance suite every [`Backend`](super::Backend) runs against the reference.
