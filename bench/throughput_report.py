"""The report of bench/throughput.py: the cost per GB from the project's
cost model (its part 6), the Markdown table and the PNG chart.
"""

import math
import os
import re
from pathlib import Path

from throughput_common import KAFKA_VERSION, LATENCY_MBPS, RECORD_BYTES, mb


# --- 6. cost -----------------------------------------------------------------------

def cost_per_gb(dry: dict, ferry_steady: dict | None) -> dict:
    """Turns the model's month at the observed rate into dollars per GB."""
    out = dry["output"]
    rps = sum(f["observed_records_per_second"] for f in out["flows"])
    if rps <= 0:
        return {}
    month = out["monthly_cost"]
    gb_month = rps * RECORD_BYTES * 730 * 3600 / 1e9
    res = {
        "model": "ferry plan --dry-run (functions/core/src/cost.rs)",
        "command": " ".join(dry["args"]),
        "observed_records_per_second": round(rps, 1),
        "observed_mb_per_s": round(mb(rps * RECORD_BYTES), 2),
        "gb_per_month": round(gb_month, 1),
        "monthly_usd": round(month["total_usd"], 2),
        "usd_per_gb": round(month["total_usd"] / gb_month, 5),
        "lambda_usd_per_gb": round(month["lambda_usd"] / gb_month, 5),
        "step_functions_usd_per_gb": round(month["step_functions_usd"] / gb_month, 5),
        "dynamodb_usd_per_gb": round(month["dynamodb_usd"] / gb_month, 5),
        "model_write_units_per_second": round(month["dynamodb_write_units"] / (730 * 3600), 1),
        "assumptions": month["assumptions"],
    }
    # DynamoDB again from the writes counted in the same steady run, at the
    # model's own price.
    price = re.search(r"DynamoDB \$([\d.]+)/million write units", " ".join(month["assumptions"]))
    if price and ferry_steady:
        wus = ferry_steady["write_units_per_second"]
        res["measured_write_units_per_second"] = wus
        res["dynamodb_usd_per_gb_from_measured_writes"] = round(
            wus * 730 * 3600 * float(price.group(1)) / 1e6 / gb_month, 5)
    return res


# --- output ------------------------------------------------------------------------

def table(r: dict) -> str:
    def v(x, fmt="{:,.1f}"):
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)

    rows = [
        ("Throughput, MB/s (limit: lower of the two perf tools)", v(r.get("limit_mb_per_s")),
         v(r.get("ferry_mb_per_s")), v(r.get("mirrormaker2_mb_per_s"))),
        ("Share of the limit", "100%", v(r.get("ferry_share_of_limit"), "{:.0%}"),
         v(r.get("mirrormaker2_share_of_limit"), "{:.0%}")),
        ("Seconds to the first record on the target", "", v(r.get("ferry_first_record_s")),
         v(r.get("mirrormaker2_first_record_s"))),
        (f"Latency p50 at {LATENCY_MBPS:g} MB/s, ms", "", v(r.get("ferry_latency_p50_ms"), "{:,.0f}"),
         v(r.get("mirrormaker2_latency_p50_ms"), "{:,.0f}")),
        (f"Latency p99 at {LATENCY_MBPS:g} MB/s, ms", "", v(r.get("ferry_latency_p99_ms"), "{:,.0f}"),
         v(r.get("mirrormaker2_latency_p99_ms"), "{:,.0f}")),
        ("CPU seconds per GB (bulk copy)", "", v(r.get("ferry_cpu_s_per_gb"), "{:,.2f}"),
         v(r.get("mirrormaker2_cpu_s_per_gb"), "{:,.2f}")),
        (f"CPU seconds per GB at {LATENCY_MBPS:g} MB/s", "", v(r.get("ferry_steady_cpu_s_per_gb"), "{:,.2f}"),
         v(r.get("mirrormaker2_steady_cpu_s_per_gb"), "{:,.2f}")),
        ("Peak RSS, MB (bulk copy)", "", v(r.get("ferry_peak_rss_mb")), v(r.get("mirrormaker2_peak_rss_mb"))),
        ("DynamoDB write requests per GB (bulk copy)", "", v(r.get("ferry_state_writes_per_gb")), ""),
        (f"DynamoDB write requests per GB at {LATENCY_MBPS:g} MB/s", "", v(r.get("ferry_steady_state_writes_per_gb")), ""),
        ("DynamoDB items written per GB (bulk copy)", "", v(r.get("ferry_state_write_items_per_gb")), ""),
        (f"DynamoDB items written per GB at {LATENCY_MBPS:g} MB/s", "",
         v(r.get("ferry_steady_state_write_items_per_gb")), ""),
        (f"Estimated AWS cost per GB at {LATENCY_MBPS:g} MB/s, USD", "", v(r.get("ferry_cost_usd_per_gb"), "{:.4f}"), ""),
    ]
    out = ["| | Limit (Kafka perf tools) | Ferry | MirrorMaker 2 |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["Kafka consumer\nperf (source)", "Kafka producer\nperf (target)", "Ferry", "MirrorMaker 2"]
    vals = [r.get("limit", {}).get("consumer_perf_mb_per_s"), r.get("limit", {}).get("producer_perf_mb_per_s"),
            r.get("ferry_mb_per_s"), r.get("mirrormaker2_mb_per_s")]
    colors = ["#999999", "#bbbbbb", "#1f77b4", "#ff7f0e"]
    ax1.bar(names, [x or 0 for x in vals], color=colors)
    ax1.tick_params(axis="x", labelsize=9)
    for i, x in enumerate(vals):
        if x:
            ax1.text(i, x, f"{x:.1f}" if x < 10 else f"{x:.0f}", ha="center", va="bottom")
    ax1.set_ylabel("MB/s")
    ax1.set_title(f"Bulk copy, {r['payload_gb']:.2f} GB, 12 partitions")
    lat = [("p50", "ferry_latency_p50_ms", "mirrormaker2_latency_p50_ms"),
           ("p99", "ferry_latency_p99_ms", "mirrormaker2_latency_p99_ms")]
    xs = range(len(lat))
    for off, who, col in ((-0.2, 1, "#1f77b4"), (0.2, 2, "#ff7f0e")):
        ys = [r.get(t[who]) or 0 for t in lat]
        ax2.bar([x + off for x in xs], ys, width=0.4, color=col, label=["", "Ferry", "MirrorMaker 2"][who])
        for x, y in zip(xs, ys):
            ax2.text(x + off, y, f"{y:.0f}", ha="center", va="bottom")
    ax2.set_xticks(list(xs), [t[0] for t in lat])
    ax2.set_ylabel("ms")
    ax2.set_title(f"End-to-end latency at {LATENCY_MBPS:g} MB/s")
    ax2.legend()
    fig.suptitle(f"Ferry vs MirrorMaker 2 (Kafka {KAFKA_VERSION}), {r['date']}, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
