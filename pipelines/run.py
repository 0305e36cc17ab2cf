"""`make run`: materialise the whole asset graph into the persistent stores, then summarise.

Three kinds of Dagster run, each recorded in DAGSTER_HOME and visible in the
UI afterwards: the data assets once, one run per training partition, then
the analyses over all of them.
"""

import argparse
import sys
import time

import dagster as dg

from assets.analysis import accuracy_by_variant
from conv_core.models import MODEL_NAMES
from pipelines.resources.partitions import DATA_VARIANTS, training_key
from pipelines.resources.paths import ensure_dagster_home, storage_dir
from pipelines.resources.tracking import MlflowTracking

DATA_ASSETS = ["mnist", "shifted_mnist", "infinite_mnist", "parameter_counts"]
TRAINING_ASSETS = ["trained_model", "model_evaluation"]
ANALYSIS_ASSETS = ["representation_distances", "filter_figures", "input_gradients", "top_activations",
                   "hallucinations", "sliding_segmentation", "run_comparison"]
# Last, in a run of its own: it reads everything above.
REPORT_ASSETS = ["lecture_report"]
# Every model on plain digits; the lecture's two also on augmented data.
DEFAULT_AUGMENTED_MODELS = ("seed_cnn", "mlp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="MNIST source: auto (default), download, idx_dir, sample")
    parser.add_argument("--idx-dir", default=None, help="folder with the four MNIST IDX files")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--augmented-models", nargs="*", default=list(DEFAULT_AUGMENTED_MODELS), choices=MODEL_NAMES,
                        help="models also trained on the augmented variants")
    parser.add_argument("--variants", nargs="+", default=list(DATA_VARIANTS), choices=DATA_VARIANTS,
                        help="data variants to train the augmented models on")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="training seeds of the augmented models' runs (the comparison of data variants "
                             "reports mean and spread over them); other models train with the first seed")
    parser.add_argument("--heldout-idx-dir", default=None,
                        help="also evaluate every model on the t10k-* files of this IDX folder")
    parser.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                        help="training arithmetic: auto (default) is bf16 autocast where the device has bf16 "
                             "units (CUDA, AVX-512 BF16 or AMX CPUs), else fp32")
    parser.add_argument("--train-limit", type=int, default=None, help="train on a subset (quick runs)")
    parser.add_argument("--test-limit", type=int, default=None)
    return parser.parse_args(argv)


def _phase(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _execute(job: dg.JobDefinition, instance: dg.DagsterInstance, selection: list[str], run_config: dict,
             partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(name) for name in selection], partition_key=partition_key,
        run_config={**run_config, "loggers": {"console": {"config": {"log_level": "INFO"}}}},
        raise_on_error=False)
    label = f"{', '.join(selection)}" + (f" [{partition_key}]" if partition_key else "")
    status = "ok" if result.success else "FAILED"
    print(f"--- {status}: {label} in {time.perf_counter() - started:.1f} s (run {result.run_id})", flush=True)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.error:
                print(event.step_failure_data.error.to_string(), file=sys.stderr)
        raise SystemExit(f"stopped: {label} failed; see the run {result.run_id} in the Dagster UI (make ui)")
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    ensure_dagster_home()
    from pipelines.definitions import defs  # after DAGSTER_HOME is settled

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("full_pipeline")
    started = time.perf_counter()

    mnist_config = {k: v for k, v in {"source": args.source, "idx_dir": args.idx_dir,
                                      "train_limit": args.train_limit, "test_limit": args.test_limit}.items()
                    if v is not None}
    train_config = {"epochs": args.epochs} if args.epochs else {}
    if args.precision:
        train_config["precision"] = args.precision

    _phase("data")
    _execute(job, instance, DATA_ASSETS, {"ops": {"mnist": {"config": mnist_config}}})

    partitions = [training_key(m, "plain") for m in args.models if "plain" in args.variants]
    partitions += [training_key(m, v) for v in args.variants if v != "plain" for m in args.augmented_models]
    evaluation_config = {"heldout_idx_dir": args.heldout_idx_dir} if args.heldout_idx_dir else {}
    compared = set(args.augmented_models)
    # The first seed goes last, so the analyses (which read each partition's
    # latest materialisation) explain the first seed's models.
    steps = [(key, seed) for seed in reversed(args.seeds) for key in partitions
             if seed == args.seeds[0] or key.keys_by_dimension["model"] in compared]
    for number, (key, seed) in enumerate(steps, start=1):
        _phase(f"training {number}/{len(steps)}: {key.keys_by_dimension['model']} on "
               f"{key.keys_by_dimension['data']} data, seed {seed}")
        _execute(job, instance, TRAINING_ASSETS, {"ops": {
            "trained_model": {"config": {**train_config, "seed": seed}},
            "model_evaluation": {"config": evaluation_config}}}, partition_key=str(key))

    _phase("analyses and figures")
    _execute(job, instance, ANALYSIS_ASSETS, {})

    _phase("lecture report")
    _execute(job, instance, REPORT_ASSETS, {})
    report = defs.load_asset_value("lecture_report", instance=instance)

    comparison = defs.load_asset_value("run_comparison", instance=instance)
    print("\n=== results ===")
    print(comparison[["model", "data_variant", "seed", "test_accuracy", "weights", "training_seconds", "epochs"]]
          .to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print("\ntest accuracy by model and data variant (mean and spread over seeds):")
    print(accuracy_by_variant(comparison).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if args.heldout_idx_dir:
        print(f"\nheld-out test set ({args.heldout_idx_dir}):")
        for key in partitions:
            value = defs.load_asset_value("model_evaluation", partition_key=str(key), instance=instance)
            print(f"  {value['model']:>15} / {value['data_variant']:<9} {value['heldout']['accuracy']:.4f}")
    mlflow = MlflowTracking()
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")
    print(f"figures and stored assets: {storage_dir()}")
    print(f"lecture report ({report['claims_passed']} of {report['claims_total']} claims hold): {report['path']}")
    print(f"MLflow store: {mlflow.resolved_uri()} (experiment '{mlflow.resolved_experiment()}')")
    print("open both UIs with: make ui  (Dagster on http://127.0.0.1:3000, MLflow on http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
