#!/usr/bin/env bash
# Side-by-side CPU training comparison with JAX: installs jax[cpu] from PyPI into a virtual
# environment under target/, builds our timing example, and prints one table measured in
# one run. Arguments are passed to compare.py (e.g. --quick, --iterations 3, --json F).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import jax" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "jax[cpu]==0.10.2"
fi
cargo build --release --quiet -p surrogate-rnn --features product-stats --example peer_timing
python3 benches/peers/compare.py --ours target/release/examples/peer_timing \
    --python "$venv/bin/python" "$@"
