"""``sigma-pyro train``: fit a model, save it, write its metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sigma_pyro.cli.commands.common import add_config_flags, config_overrides, log, quiet
from sigma_pyro.config import PRESET_NAMES, load_config


def register(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model and write it with its metrics",
        description="Train with SVI (Trace_ELBO) until early stopping on the validation metric; "
        "writes OUT/model.pt, OUT/model.json, OUT/last.pt (for --resume), "
        "OUT/metrics.json (valid and test metrics, and baselines), OUT/history.csv (one row "
        "per epoch, rewritten after each), OUT/curves.png (loss terms and validation "
        "metrics against epochs) and, when tensorboard is installed, OUT/tensorboard/. "
        "Under torchrun (torchrun --nproc-per-node N -m sigma_pyro train ...) it trains "
        "data-parallel with DistributedDataParallel (gloo on CPU, nccl on CUDA): "
        "--batch-size stays the global batch, split over the ranks; rank 0 writes. "
        "See docs/scaling.md.",
    )
    parser.add_argument(
        "--preset",
        help=f"settings preset: {', '.join(PRESET_NAMES)} or a YAML "
        "file (default: synthetic when --data is omitted)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<data>-<prior>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/last.pt instead of starting over"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing on stderr but warnings and errors (no epoch lines or progress bars)",
    )
    add_config_flags(parser, ("data", "model", "train", "eval"))
    parser.set_defaults(handler=run)


def run(args) -> int:
    from sigma_pyro.runtime.distributed import process_group, rank_device

    overrides = config_overrides(args)
    data_given = "path" in overrides.get("data", {})
    preset = args.preset or (None if data_given else "synthetic")
    config = load_config(preset, overrides)
    with process_group(config.train.device) as world:
        config.train.device = rank_device(config.train.device, world)
        return _train(args, config, world)


def _train(args, config, world) -> int:
    """Every rank runs this; rank 0 alone speaks and writes."""
    from sigma_pyro.api import SigmaRecommender
    from sigma_pyro.runtime.checkpoint import atomic_write_json
    from sigma_pyro.runtime.resources import peak_rss_mb

    say = log if world.is_main and not args.quiet else quiet
    if args.quiet or not world.is_main:
        config.train.progress = False
    out = args.out or Path("runs") / (
        f"{Path(config.data.path).stem if config.data.path else 'synthetic'}-{config.model.prior}"
    )
    rec = SigmaRecommender(config)
    started = time.perf_counter()
    dataset = rec.load_data()
    skipped = rec.data_report.get("skipped_short_users")
    say(
        f"data: {dataset.source}: {dataset.num_users} users, {dataset.num_items} items, "
        f"{sum(len(s) for s in dataset.sequences)} interactions"
        + (f" ({skipped} users with < 3 items skipped)" if skipped else "")
    )
    say(
        f"training prior={config.model.prior} into {out}"
        + (f" on {world.size} rank(s) ({config.train.device} each)" if world.distributed else "")
    )
    summary = rec.fit(out_dir=out, resume=args.resume, log=say)
    test = rec.evaluate("test")
    valid = rec.evaluate("valid")
    if not world.is_main:
        return 0
    metrics = {
        "valid": valid,
        "test": test,
        "baselines": rec.baselines("test"),
        "best_epoch": summary.best_epoch,
        "epochs_run": summary.epochs_run,
        "stopped_early": summary.stopped_early,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "world_size": world.size,
    }
    interests = rec.interest_summary("valid")
    if interests is not None:
        metrics["interests"] = interests
    atomic_write_json(metrics, out / "metrics.json")
    popularity = metrics["baselines"]["popularity"]["ndcg@10"]
    say(
        f"best epoch {summary.best_epoch}; test "
        + " ".join(
            f"{k}={test[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")
        )
        + f"; popularity ndcg@10={popularity:.4f}; {metrics['wall_seconds']}s"
    )
    print(json.dumps({"out": str(out), "test": test}, indent=2))
    return 0
