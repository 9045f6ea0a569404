"""Markdown tables for docs/results.md from the JSON files that benchmarks/run_results.sh writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

R = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")


def load(name):
    p = R / name
    return json.loads(p.read_text()) if p.is_file() else None


def f(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def mre_table(res, clicks, extra=None):
    head = "| clicks | " + " | ".join(str(k) for k in range(clicks + 1)) + " |"
    sep = "|---" * (clicks + 2) + "|"
    rows = [head, sep,
            f"| model MRE ({res['unit']}) | " + " | ".join(f(v) for v in res["mre_model"][: clicks + 1]) + " |",
            f"| manual revision MRE ({res['unit']}) | " + " | ".join(f(v) for v in res["mre_manual"][: clicks + 1]) + " |"]
    for label, vals in (extra or []):
        rows.append(f"| {label} | " + " | ".join(f(v) for v in vals[: clicks + 1]) + " |")
    return "\n".join(rows)


def noc_table(res):
    t = list(res["noc"])
    rows = ["| target | " + " | ".join(f"{k} {res['unit']}" for k in t) + " |", "|---" * (len(t) + 1) + "|",
            f"| NoC{res['max_clicks']} model | " + " | ".join(f(res["noc"][k]) for k in t) + " |",
            f"| NoC{res['max_clicks']} manual | " + " | ".join(f(res["noc_manual"][k]) for k in t) + " |",
            f"| FR{res['max_clicks']} model (%) | " + " | ".join(f(res["fr"][k]) for k in t) + " |",
            f"| FR{res['max_clicks']} manual (%) | " + " | ".join(f(res["fr_manual"][k]) for k in t) + " |"]
    return "\n".join(rows)


def orders_table(prefix, clicks):
    rows = ["| order | " + " | ".join(f"MRE@{k}" for k in range(clicks + 1)) + " | " +
            " | ".join(f"NoC@{t}" for t in (load(f"{prefix}-worst.json") or {"noc": {}})["noc"]) + " |"]
    rows.append("|---" * (clicks + 2 + len(rows[0].split("NoC@")) - 1) + "|")
    for order in ("worst", "ere", "random"):
        res = load(f"{prefix}-{order}.json")
        if res is None:
            continue
        rows.append(f"| {order} | " + " | ".join(f(v) for v in res["mre_model"][: clicks + 1]) + " | "
                    + " | ".join(f(res["noc"][k]) for k in res["noc"]) + " |")
    return "\n".join(rows)


def main():
    for name in sorted(R.glob("*.json")):
        res = json.loads(name.read_text())
        print(f"\n### {name.name}\n")
        if "mre_model" in res:
            n = res["max_clicks"]
            extra = []
            if "sdr" in res:
                extra += [(f"SDR {r} mm (%)", v) for r, v in res["sdr"].items()]
            if "cobb_smape" in res:
                extra += [("Cobb SMAPE model (%)", res["cobb_smape"]), ("Cobb SMAPE manual (%)", res["cobb_smape_manual"])]
            print(f"{res['num_images']} images, order {res['order']}\n")
            print(mre_table(res, n, extra))
            print()
            print(noc_table(res))
            if "ece_before" in res:
                c = res["calibration"]
                print(f"\nECE {f(res['ece_before'], 4)} → {f(res['ece_after'], 4)}; ERE Spearman {f(res['ere_spearman'], 3)}; "
                      f"AUROC(err > {c['error_threshold']:g} {c['unit']}) {f(res['ere_auroc'], 3)}; binned r "
                      f"{f(c['ere_binned_pearson'], 3)} (groups of {c['ere_group_size']}; "
                      f"{f(c.get('ere_binned_pearson_full_groups'), 3)} without the partial last group); mean ERE {f(c['mean_ere'])} vs MRE {f(c['mre'])}")
                ge = c.get("good_erroneous")
                if ge:
                    print(f"\n| split (ERE > {f(ge['threshold'])} {c['unit']}) | n | share | MRE |\n|---|---|---|---|")
                    for key in ("overall", "good", "erroneous"):
                        g = ge[key]
                        print(f"| {key} | {g['n']} | {100 * g['fraction']:.1f} % | {f(g['mre'])} |")
                    print(f"\nlarge errors (> {ge['error_threshold']:g}) caught: {100 * ge['caught']:.1f} %; "
                          f"false alarms {100 * ge['false_alarm']:.1f} %; precision {100 * ge['precision']:.1f} %")
        else:
            print("```\n" + json.dumps(res, indent=1)[:1500] + "\n```")
    for prefix, clicks in (("aasce-spine-eval", 10), ("isbi-ceph-test1", 5), ("phantom-spine-eval", 5)):
        if load(f"{prefix}-worst.json"):
            print(f"\n### click orders: {prefix}\n")
            print(orders_table(prefix, clicks))


if __name__ == "__main__":
    main()
