"""Times the same training steps in this project and in JAX, one configuration after the
other in one run, and prints a table of medians and ratios (ours / JAX's best).

Usage (from the repository root; `run.sh` sets up JAX and builds our side):
    python3 benches/peers/compare.py --ours target/release/examples/peer_timing \
        --python target/peers-venv/bin/python [--quick] [--json results.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (model, T, hidden, batch, input size, one-hot inputs)
ISSUE_CONFIGS = [
    (model, steps, hidden, batch, 128, True)
    for (steps, hidden, batch) in [(8192, 64, 8), (8192, 64, 1), (1024, 512, 8)]
    for model in ("gilr-lstm", "lstm")
]
# Table 2: 2 x 256, input 4, B*T = 65,536.
TABLE2_CONFIGS = [
    (model, steps, 256, 65536 // steps, 4, False)
    for steps in (16, 256, 4096, 65536)
    for model in ("sru", "qrnn2", "qrnn10", "gilr-lstm")
]
QUICK_CONFIGS = [("gilr-lstm", 1024, 32, 4, 128, True), ("lstm", 1024, 32, 4, 128, True),
                 ("qrnn2", 256, 64, 16, 4, False)]


def run_json(command):
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def config_args(model, steps, hidden, batch, n_input, one_hot, iterations):
    args = ["--model", model, "--steps", str(steps), "--hidden", str(hidden),
            "--batch", str(batch), "--input", str(n_input), "--iterations", str(iterations)]
    return args + (["--one-hot"] if one_hot else [])


def products_cells(ours):
    """The products' share of one more step of ours, their rate, a plain product's rate
    (the step's largest product shape, best of the samples in the same run), our step over
    its GEMM floor, and the extra step in two parts over the floor: its products' time
    (plain rate / their rate) and the rest (gate passes, scans, the optimizer), which add
    up to that step's ratio; dashes where peer_timing was built without the feature
    `product-stats`."""
    if "gemm_floor_s" not in ours:
        return "— | — | — | — | — | —"
    floor = ours["gemm_floor_s"]
    products_part = ours["product_s"] / floor
    rest = (ours["product_step_s"] - ours["product_s"]) / floor
    return (f"{ours['product_share']:.2f} | {ours['product_gflops']:.0f} | "
            f"{ours['plain_gflops']:.0f} | {ours['median_s'] / floor:.2f} | "
            f"{products_part:.2f} | {rest:.2f}")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", required=True, help="path of the peer_timing example")
    parser.add_argument("--python", required=True, help="python with jax installed")
    parser.add_argument("--before", help="another build of peer_timing (e.g. before a change), "
                        "timed in the same run and shown in its own column")
    parser.add_argument("--quick", action="store_true", help="three small configurations")
    parser.add_argument("--set", choices=["all", "issue", "table2"], default="all",
                        help="the issue's configurations, Table 2's, or both (default)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    sets = {"all": ISSUE_CONFIGS + TABLE2_CONFIGS, "issue": ISSUE_CONFIGS,
            "table2": TABLE2_CONFIGS}
    configs = QUICK_CONFIGS if args.quick else sets[args.set]
    jax_script = os.path.join(HERE, "jax_models.py")
    rows = []
    print(f"# Training step, seconds (median of {args.iterations}); {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs")
    before_head = ("| before | ", "---:|") if args.before else ("| ", "")
    print(f"| model | T | n | batch | input {before_head[0]}ours | JAX serial scan "
          "| JAX associative scan | ours / JAX best | products' share | products GFLOP/s "
          "| plain product GFLOP/s | ours / GEMM floor | floor × products | floor × rest |")
    print(f"|---|---:|---:|---:|---:|{before_head[1]}---:|---:|---:|---:|---:|---:|---:|---:"
          "|---:|---:|")
    for config in configs:
        common = config_args(*config, args.iterations)
        before = run_json([args.before] + common)["median_s"] if args.before else None
        ours_json = run_json([args.ours] + common)
        ours = ours_json["median_s"]
        serial = run_json([args.python, jax_script] + common + ["--scan", "serial"])
        peers = {"serial": serial["median_s"]}
        if config[0] != "lstm":
            peers["associative"] = run_json(
                [args.python, jax_script] + common + ["--scan", "associative"])["median_s"]
        best = min(peers.values())
        model, steps, hidden, batch, n_input, _ = config
        associative = peers.get("associative")
        before_cell = "" if before is None else f"{before:.4f} | "
        print(f"| {model} | {steps} | {hidden} | {batch} | {n_input} | {before_cell}{ours:.4f} | "
              f"{peers['serial']:.4f} | "
              f"{'—' if associative is None else f'{associative:.4f}'} | {ours / best:.2f} | "
              f"{products_cells(ours_json)} |",
              flush=True)
        rows.append({"model": model, "steps": steps, "hidden": hidden, "batch": batch,
                     "input": n_input, "before_s": before, "ours_s": ours, "jax_serial_s": peers["serial"],
                     "jax_associative_s": associative, "ratio_to_best": ours / best,
                     "jax": serial["jax"],
                     "products": {k: v for k, v in ours_json.items()
                                  if k.startswith(("product", "plain", "gemm", "largest"))}})
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"cpu": cpu_name(), "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
