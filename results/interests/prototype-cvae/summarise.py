"""Table of the prototype's logs (this folder's *.log): python summarise.py > summary.csv"""

import ast
import re
import sys
from pathlib import Path

import pandas as pd

rows = []
for log in sorted(Path(__file__).parent.glob("*.log")):
    text = log.read_text()
    if " done " not in text:
        continue
    first = text.splitlines()[0].split()
    row = {"run": log.stem, "prior": first[0], "design": first[1]}
    row.update(dict(re.findall(r"\b(kl_cap|seed)=([0-9.]+)", text.splitlines()[0])))
    row.setdefault("seed", "0")
    curve = [float(v) for v in re.findall(r"valid ndcg@10=([0-9.]+)", text)]
    row["epochs"] = len(curve)
    for epoch in (6, 12, 24):
        row[f"valid_ndcg@10_epoch{epoch}"] = curve[epoch - 1] if len(curve) >= epoch else None
    for split in ("valid", "test"):
        found = re.search(rf" {split} (\{{.*\}})", text)
        for metric, value in ast.literal_eval(found.group(1)).items():
            row[f"{split}_{metric}"] = value
    kl = re.findall(r"kl_z=([0-9.]+)", text)
    row["last_kl_z"] = float(kl[-1]) if kl else None
    found = re.search(r"separation \(distance / rms scale\) ([0-9.]+) median largest intensity ([0-9.]+)", text)
    row["separation"], row["largest_intensity"] = (
        (float(found.group(1)), float(found.group(2))) if found else (None, None)
    )
    rows.append(row)
pd.DataFrame(rows).to_csv(sys.stdout, index=False)
