"""The peer side of the CPU training comparison: the same models as surrogate-rnn, written
in JAX, the whole training step (forward, backward, Adam) in one `jax.jit`.

Prints one JSON object per configuration: {"model", "steps", "batch", "hidden", "input",
"scan", "median_s", "times_s"}. Run through `compare.py`, which times our side in the same
run and prints the table.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_platforms", "cpu")


def linear_scan(decay, impulse, how):
    """h_t = a_t * h_{t-1} + x_t over axis 0 (time), from h = 0."""
    if how == "serial":
        def step(h, ax):
            a, x = ax
            h = a * h + x
            return h, h

        _, hs = jax.lax.scan(step, jnp.zeros_like(impulse[0]), (decay, impulse))
        return hs

    def combine(first, second):
        a1, x1 = first
        a2, x2 = second
        return a1 * a2, a2 * x1 + x2

    _, hs = jax.lax.associative_scan(combine, (decay, impulse), axis=0)
    return hs


def shift_down(x, steps):
    """x_{t - steps} with zeros before the start, along axis 0."""
    pad = jnp.zeros((steps,) + x.shape[1:], x.dtype)
    return jnp.concatenate([pad, x[:-steps]], axis=0)


def gilr_lstm(params, x, how):
    v, u, b = params
    n = u.shape[0]
    p = x @ v + b
    g = jax.nn.sigmoid(p[..., :n])
    j = jnp.tanh(p[..., n:2 * n])
    surrogate = linear_scan(g, (1 - g) * j, how)
    q = p[..., 2 * n:] + shift_down(surrogate, 1) @ u
    f = jax.nn.sigmoid(q[..., :n])
    i = jax.nn.sigmoid(q[..., n:2 * n])
    o = jax.nn.sigmoid(q[..., 2 * n:3 * n])
    z = jnp.tanh(q[..., 3 * n:])
    return o * linear_scan(f, i * z, how)


def qrnn(params, x, how, width):
    w, b = params
    n = b.shape[0] // 3
    window = jnp.concatenate([x] + [shift_down(x, s) for s in range(1, width)], axis=-1)
    p = window @ w + b
    z = jnp.tanh(p[..., :n])
    f = jax.nn.sigmoid(p[..., n:2 * n])
    o = jax.nn.sigmoid(p[..., 2 * n:])
    return o * linear_scan(f, (1 - f) * z, how)


def sru(params, x, how):
    w, b = params
    n = x.shape[-1]
    p = x @ w
    candidate = p[..., :n]
    f = jax.nn.sigmoid(p[..., n:2 * n] + b[:n])
    r = jax.nn.sigmoid(p[..., 2 * n:] + b[n:])
    c = linear_scan(f, (1 - f) * candidate, how)
    return r * c + (1 - r) * x


def lstm(params, x, how):
    del how  # serial by nature
    v, u, b = params
    n = u.shape[0]
    p = x @ v + b

    def step(carry, p_t):
        h, c = carry
        q = p_t + h @ u
        f = jax.nn.sigmoid(q[..., :n])
        i = jax.nn.sigmoid(q[..., n:2 * n])
        o = jax.nn.sigmoid(q[..., 2 * n:3 * n])
        z = jnp.tanh(q[..., 3 * n:])
        c = f * c + i * z
        h = o * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros(p.shape[1:-1] + (n,), p.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), p)
    return hs


def layer_shapes(model, m, n):
    """Parameter shapes of one recurrent layer with m inputs and n hidden units."""
    if model == "gilr-lstm":
        return [(m, 6 * n), (n, 4 * n), (6 * n,)]
    if model == "lstm":
        return [(m, 4 * n), (n, 4 * n), (4 * n,)]
    if model.startswith("qrnn"):
        width = int(model[4:])
        return [(width * m, 3 * n), (3 * n,)]
    if model == "sru":
        return [(m, 3 * n), (2 * n,)]
    raise ValueError(f"unknown model {model}")


def apply_layer(model, params, x, how):
    if model == "gilr-lstm":
        return gilr_lstm(params, x, how)
    if model == "lstm":
        return lstm(params, x, how)
    if model.startswith("qrnn"):
        return qrnn(params, x, how, int(model[4:]))
    return sru(params, x, how)


def init_params(model, n_input, hidden, key):
    params = {"layers": []}
    if model == "sru":
        # SRU's highway needs input = hidden: a linear map in front, as ours.
        key, sub = jax.random.split(key)
        params["projection"] = 0.1 * jax.random.normal(sub, (n_input, hidden))
        n_input = hidden
    for m in (n_input, hidden):
        shapes = layer_shapes(model, m, hidden)
        layer = []
        for shape in shapes:
            key, sub = jax.random.split(key)
            layer.append(0.1 * jax.random.normal(sub, shape))
        params["layers"].append(layer)
    key, sub = jax.random.split(key)
    params["head"] = [0.1 * jax.random.normal(sub, (hidden, 2)), jnp.zeros((2,))]
    return params


def make_train_step(model, how, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    def loss_fn(params, x, labels):
        h = x @ params["projection"] if "projection" in params else x
        for layer in params["layers"]:
            h = apply_layer(model, layer, h, how)
        w, b = params["head"]
        logits = h[-1] @ w + b
        log_probs = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

    @jax.jit
    def train_step(params, moments, step, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        first, second = moments
        first = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, first, grads)
        second = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, second, grads)
        correction = jnp.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - learning_rate * correction * m / (jnp.sqrt(v) + eps),
            params, first, second)
        return params, (first, second), loss

    return train_step


def inputs(steps, batch, n_input, one_hot, seed):
    rng = np.random.default_rng(seed)
    if one_hot:
        x = np.zeros((steps, batch, n_input), np.float32)
        idx = rng.integers(0, n_input, size=(steps, batch))
        np.put_along_axis(x, idx[..., None], 1.0, axis=2)
    else:
        x = rng.standard_normal((steps, batch, n_input)).astype(np.float32)
    labels = rng.integers(0, 2, size=batch).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(labels)


def time_config(model, steps, batch, hidden, n_input, one_hot, how, iterations):
    params = init_params(model, n_input, hidden, jax.random.PRNGKey(7))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    moments = (zeros, zeros)
    x, labels = inputs(steps, batch, n_input, one_hot, 7)
    train_step = make_train_step(model, how)
    # Warm-up: compilation and first-touch.
    params, moments, loss = train_step(params, moments, 1.0, x, labels)
    loss.block_until_ready()
    times = []
    for i in range(iterations):
        start = time.perf_counter()
        params, moments, loss = train_step(params, moments, float(i + 2), x, labels)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True,
                        choices=["gilr-lstm", "lstm", "sru", "qrnn2", "qrnn10"])
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--hidden", type=int, required=True)
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--one-hot", action="store_true")
    parser.add_argument("--scan", choices=["serial", "associative"], default="serial")
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    times = time_config(args.model, args.steps, args.batch, args.hidden, args.input,
                        args.one_hot, args.scan, max(1, args.iterations))
    print(json.dumps({
        "model": args.model, "steps": args.steps, "batch": args.batch,
        "hidden": args.hidden, "input": args.input, "scan": args.scan,
        "median_s": statistics.median(times), "times_s": times,
        "jax": jax.__version__,
    }))


if __name__ == "__main__":
    main()
