//! surrogate-rnn: placeholder.
