"""The ``sigma-pyro`` command: a thin layer over :mod:`sigma_pyro.api`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sigma_pyro.config import PRESET_NAMES, field_types, flag, load_config
from sigma_pyro.errors import SigmaPyroError

# Flags whose name differs from the config field they set.
FLAG_NAMES = {"path": "--data"}
HELP = {
    "path": "interaction file; omit to use the built-in synthetic dataset",
    "format": "seq (user item item ...), inter (RecBole atomic file) or table (CSV/TSV/Parquet); "
              "inferred from the extension when omitted",
    "prior": "prior over z: sigma (semantic mixture, default) or normal (ContrastVAE-style)",
    "epochs": "maximum number of epochs (early stopping usually ends sooner)",
    "ks": "cut-offs K for Recall@K and NDCG@K, e.g. 5,10,20,40",
    "posterior_samples": "0 scores with the posterior mean of z; S > 0 averages S predictives",
    "mask_history": "exclude items already in the history from the ranking (default on)",
    "device": "cpu, cuda or cuda:N",
}


def _add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    groups = {}
    for name, (section, hint) in field_types().items():
        if section not in sections:
            continue
        group = groups.setdefault(section, parser.add_argument_group(f"{section} settings"))
        option = FLAG_NAMES.get(name, flag(name))
        kwargs = {"dest": f"cfg_{name}", "default": argparse.SUPPRESS, "help": HELP.get(name)}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = name.upper()
        group.add_argument(option, **kwargs)


def _overrides(args: argparse.Namespace) -> dict:
    types = field_types()
    nested: dict = {}
    for key, value in vars(args).items():
        if key.startswith("cfg_"):
            name = key[4:]
            nested.setdefault(types[name][0], {})[name] = value
    return nested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigma-pyro",
        description="SIGMA, the semantic Gaussian mixture VAE for sequential recommendation, "
                    "trained with SVI in Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and write it with its metrics",
                           description="Train with SVI (Trace_ELBO) until early stopping on the "
                                       "validation metric; writes OUT/model.pt, OUT/model.json, "
                                       "OUT/last.pt (for --resume) and OUT/metrics.json.")
    train.add_argument("--preset", help=f"settings preset: {', '.join(PRESET_NAMES)} or a YAML "
                                        "file (default: synthetic when --data is omitted)")
    train.add_argument("--out", type=Path, help="output folder (default: runs/<data>-<prior>)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/last.pt instead of starting over")
    _add_config_flags(train, ("data", "model", "train", "eval"))

    evaluate = sub.add_parser("evaluate", help="full-ranking metrics of a saved model",
                              description="Recall@K, NDCG@K and MRR over all items on the "
                                          "leave-one-out validation and test splits.")
    evaluate.add_argument("--model", type=Path, required=True, help="folder written by train")
    evaluate.add_argument("--split", choices=("valid", "test", "both"), default="both")
    _add_config_flags(evaluate, ("data", "eval"))

    recommend = sub.add_parser("recommend", help="top-k raw item ids for users or histories",
                               description="Recommend next items for users of the data "
                                           "(--user) or for histories given here (--history).")
    recommend.add_argument("--model", type=Path, required=True, help="folder written by train")
    recommend.add_argument("--user", action="append", default=[],
                           help="raw user id from the data (repeatable)")
    recommend.add_argument("--history", action="append", default=[],
                           help="space-separated raw item ids, oldest first (repeatable)")
    recommend.add_argument("-k", "--top", type=int, default=10, dest="top",
                           help="number of items per user (default 10)")
    _add_config_flags(recommend, ("data", "eval"))
    return parser


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from sigma_pyro.api import SigmaRecommender
    from sigma_pyro.checkpoint import atomic_write_json
    from sigma_pyro.evaluation.ranking import PopularityRecommender, evaluate_ranking
    from sigma_pyro.data.batching import pad_right

    overrides = _overrides(args)
    data_given = "path" in overrides.get("data", {})
    preset = args.preset or (None if data_given else "synthetic")
    config = load_config(preset, overrides)
    out = args.out or Path("runs") / (
        f"{Path(config.data.path).stem if config.data.path else 'synthetic'}-{config.model.prior}")
    rec = SigmaRecommender(config)
    started = time.perf_counter()
    dataset = rec.load_data()
    for note in getattr(rec, "data_notes", []):
        _log(note)
    _log(f"data: {dataset.source}: {dataset.num_users} users, {dataset.num_items} items, "
         f"{sum(len(s) for s in dataset.sequences)} interactions"
         + (f" ({rec.data_report['skipped_short_users']} users with < 3 items skipped)"
            if rec.data_report.get("skipped_short_users") else ""))
    _log(f"training prior={config.model.prior} into {out}")
    summary = rec.fit(out_dir=out, resume=args.resume, log=_log)
    valid = rec.evaluate("valid")
    test = rec.evaluate("test")
    split = rec.split
    popularity = PopularityRecommender().fit(split.test_history, dataset.num_items)
    import torch

    baseline = evaluate_ranking(popularity.score_items_for_users,
                                torch.as_tensor(split.test_target),
                                pad_right(split.test_history, max(map(len, split.test_history))),
                                dataset.num_items, ks=config.eval.ks)
    metrics = {"valid": valid, "test": test,
               "baselines": {"popularity_test": baseline},
               "best_epoch": summary.best_epoch, "epochs_run": summary.epochs_run,
               "stopped_early": summary.stopped_early,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    if rec.synthetic is not None:
        metrics["baselines"]["bayes_optimal_test"] = rec.synthetic.bayes_optimal_metrics(
            config.eval.ks, "test")
    atomic_write_json(metrics, out / "metrics.json")
    _log(f"best epoch {summary.best_epoch}; test " + " ".join(
        f"{k}={test[k]:.4f}" for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr"))
        + f"; popularity ndcg@10={baseline['ndcg@10']:.4f}; {metrics['wall_seconds']}s")
    print(json.dumps({"out": str(out), "test": test}, indent=2))
    return 0


def _load(args):
    from sigma_pyro.api import SigmaRecommender

    overrides = {k: v for section in _overrides(args).values() for k, v in section.items()}
    return SigmaRecommender.load(args.model, **overrides)


def cmd_evaluate(args) -> int:
    rec = _load(args)
    rec.load_data()
    report = rec.data_report
    if report.get("users_changed"):
        _log(f"{report['users_changed']} histories had {report['unknown_items']} items unknown "
             f"to the model, dropped; {report['users_dropped']} users dropped entirely")
    splits = ("valid", "test") if args.split == "both" else (args.split,)
    print(json.dumps({s: rec.evaluate(s) for s in splits}, indent=2))
    return 0


def cmd_recommend(args) -> int:
    rec = _load(args)
    if not args.user and not args.history:
        raise SigmaPyroError("recommend: give --user ID or --history 'ITEM ITEM ...'")
    results = {}
    if args.history:
        for history, items in zip(args.history, rec.recommend([h.split() for h in args.history],
                                                               args.top)):
            results[history] = [{"item": i, "score": round(s, 4)} for i, s in items]
    if args.user:
        rec.load_data()
        for user, items in zip(args.user, rec.recommend_users(args.user, args.top)):
            results[user] = [{"item": i, "score": round(s, 4)} for i, s in items]
    print(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "evaluate": cmd_evaluate, "recommend": cmd_recommend}[args.command]
    try:
        return handler(args)
    except SigmaPyroError as err:
        print(f"sigma-pyro: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sigma-pyro: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
