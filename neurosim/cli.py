"""The ``neurosim`` command (docs/design.md §7).

Every sub-command has ``--help``. A user error (bad profile, wrong path, bad option value) is
printed as one ``error: ...`` line on stderr with exit status 2; nothing else is a traceback.
Ctrl-C and SIGTERM stop a command with one ``interrupted by ...`` line naming what was kept and
the command that resumes it, and exit status 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from neurosim import __version__
from neurosim.errors import NeurosimError
from neurosim.interrupts import Interrupted, handle_signals

EXIT_USER_ERROR = 2


class UsageError(NeurosimError):
    """A command-line option has a value the command cannot use."""


def one_line(message: object) -> str:
    """A message on one line: user strings may hold newlines, an error line must not."""
    return " ".join(str(message).split())


def _parse_layers(text: str) -> dict[str, object]:
    """``784x128,128x10`` -> dense layers ``{"layer0": LayerShape.linear(784, 128), ...}``."""
    from neurosim.device import LayerShape

    layers: dict[str, object] = {}
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        dims = part.strip().lower().split("x")
        try:
            numbers = [int(d) for d in dims]
        except ValueError:
            raise UsageError(f"--layers: '{part}' is not IN x OUT (e.g. 784x128)") from None
        if len(numbers) != 2 or min(numbers) < 1:
            raise UsageError(f"--layers: '{part}' is not IN x OUT with positive sizes (e.g. 784x128)")
        layers[f"layer{i}"] = LayerShape.linear(numbers[0], numbers[1])
    if not layers:
        raise UsageError("--layers: give at least one layer, e.g. 784x128,128x10")
    return layers


def _cmd_profile_list(args: argparse.Namespace) -> int:
    from neurosim.device import builtin_profiles, load_profile

    profiles = builtin_profiles()
    width = max((len(name) for name in profiles), default=4)
    for name in profiles:
        print(f"{name:<{width}}  {load_profile(name).description}")
    return 0


def _cmd_profile_show(args: argparse.Namespace) -> int:
    from neurosim.device import load_profile, profile_to_yaml

    sys.stdout.write(profile_to_yaml(load_profile(args.profile)))
    return 0


def _cmd_profile_validate(args: argparse.Namespace) -> int:
    from neurosim.device import load_profile, unreferenced_numbers

    status = 0
    for file in args.files:
        try:
            load_profile(Path(file))
            if args.require_references:
                missing = unreferenced_numbers(Path(file))
                if missing:
                    raise NeurosimError(f"{file}: references: no entry for {', '.join(missing)}")
        except NeurosimError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            status = EXIT_USER_ERROR
        else:
            print(f"ok: {file}")
    return status


def _cmd_profile_sample(args: argparse.Namespace) -> int:
    from neurosim.device import load_profile, sample_chips

    if args.chips < 1:
        raise UsageError(f"--chips must be at least 1, got {args.chips}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    profile = load_profile(args.profile)
    chips = sample_chips(profile, _parse_layers(args.layers), n=args.chips, seed=args.seed)
    print(f"{len(chips)} chip(s) of profile '{profile.name}', seed {args.seed}")
    print(format_statistics(chips.statistics()))
    return 0


def format_statistics(rows: list[dict]) -> str:
    """Chip statistics (``ChipInstances.statistics()``) as an aligned text table."""
    header = f"{'layer':<8} {'quantity':<14} {'count':>8} {'nominal':>9} {'sigma':>9} {'mean':>10} {'std':>10}"
    lines = [header]
    for r in rows:
        lines.append(f"{r['layer']:<8} {r['quantity']:<14} {r['count']:>8} {r['nominal']:>9.4g} "
                     f"{r['sigma']:>9.4g} {r['mean']:>10.5g} {r['std']:>10.4g}")
    return "\n".join(lines)


def _train_overrides(args: argparse.Namespace) -> dict:
    """The training options given as flags (None = not given), as a config mapping."""
    flat = {"dataset": args.dataset, "data_root": args.data_root, "model": args.model,
            "profile": args.profile, "timesteps": args.timesteps, "epochs": args.epochs,
            "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
            "seed": args.seed, "chip_pool": args.chip_pool, "eval_chips": args.eval_chips,
            "norm": args.norm, "dropout": args.dropout}
    out: dict = {k: v for k, v in flat.items() if v is not None}
    if args.no_noise:
        out["noise"] = False
    events = {k: v for k, v in {"downsample": args.downsample, "clip": args.frame_clip}.items() if v is not None}
    if events:
        out["events"] = events
    neuron = {k: v for k, v in {"reset": args.reset, "reset_grad": args.reset_grad,
                                "surrogate": args.surrogate, "v_init": args.v_init}.items() if v is not None}
    if args.learn_threshold:
        neuron["learn_threshold"] = True
    if args.surrogate_param:
        neuron["surrogate_params"] = dict(_surrogate_param(item) for item in args.surrogate_param)
    if neuron:
        out["neuron"] = neuron
    if args.grad_scaling is not None:
        out["grad_scaling"] = {"enabled": True, "alpha": args.grad_scaling}
    if args.pda is not None:
        out["pda"] = {"enabled": True, "beta": args.pda}
    if args.tune_width:
        out["tune_width"] = {"enabled": True}
    return out


def _surrogate_param(item: str) -> tuple[str, float | str | bool]:
    """``KEY=VALUE`` of --surrogate-param: a number, true/false, or a word (PSG's shape)."""
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise UsageError(f"--surrogate-param: expected KEY=VALUE, got {item!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, float(value)
    except ValueError:
        return key, value


def _train_config(args: argparse.Namespace):
    """The TrainConfig of a ``train`` command line: --config FILE with the flags on top."""
    from neurosim.train.config import config_from_data, load_config

    overrides = _train_overrides(args)
    return load_config(args.config, overrides) if args.config else config_from_data(overrides, "options")


def _cmd_train(args: argparse.Namespace) -> int:
    from neurosim.errors import ConfigError, DatasetError, ProfileError
    from neurosim.train.distributed import process_group
    from neurosim.train.trainer import train

    config = _train_config(args)
    try:
        metrics = train(config, args.out, resume=args.resume, progress=args.progress,
                        init_from=args.init_from).metrics
    except (ProfileError, DatasetError, ConfigError) as exc:
        # a profile, dataset or model that comes from --config is named with that file
        keys = {ProfileError: {"profile"}, DatasetError: {"dataset", "data_root"},
                ConfigError: {"model", "neuron", "norm", "dropout", "timesteps"}}[type(exc)]
        from_file = not isinstance(exc, ConfigError) or str(exc).startswith("model:")
        if args.config and from_file and str(args.config) not in str(exc) and not keys & set(_train_overrides(args)):
            raise type(exc)(f"{args.config}: {exc}") from None
        raise
    if not process_group().is_main:  # under torchrun rank 0 reports for all
        return 0
    noisy = metrics["test_accuracy_noisy"]
    print(f"test accuracy: {metrics['test_accuracy']:.4f} (ideal chip)"
          + (f", {noisy:.4f} +- {metrics['test_accuracy_noisy_std']:.4f} (mean over {config.eval_chips} "
             f"chips of {config.profile})" if noisy is not None else ""))
    print(f"spikes per sample: {metrics['spikes_per_sample']:.1f}; {metrics['epochs']} epochs in "
          f"{metrics['seconds']:.1f} s" + (f" on {metrics['processes']} processes" if metrics["processes"] > 1 else ""))
    if args.out:
        print(f"wrote {args.out}/checkpoint.pt, config.yaml, metrics.json")
    return 0


def _add_train_parser(commands) -> None:
    p = commands.add_parser(
        "train", help="train a spiking network with the chip in the loop",
        description="Train with surrogate-gradient BPTT on a device profile: chip variation, dynamic "
                    "noise and the chip's number formats in the loop, and the seeds' methods as "
                    "switches. Every option can also come from --config FILE.yaml (flags win). "
                    "Under torchrun (torchrun --nproc_per_node N -m neurosim train ...) it trains with "
                    "DistributedDataParallel: --batch-size is the global batch, split over the processes.",
        epilog="Machine-readable results: OUT/metrics.json (JSON: test_accuracy on the ideal chip, "
               "test_accuracy_noisy and its std, chip_accuracies over --eval-chips sampled chips, spikes_per_sample, "
               "spikes_per_layer, epochs, seconds, per-epoch history); OUT/config.yaml holds every option used. "
               "Without --out nothing is written.")
    p.add_argument("--config", metavar="FILE.yaml", help="training options from a YAML file")
    p.add_argument("--out", metavar="DIR", help="write checkpoint.pt, config.yaml and metrics.json here")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from the weights of another run folder (e.g. one "
                   "neurosim import wrote; use its config.yaml)")
    p.add_argument("--dataset", help="digits (default), digits4x4 (2x2-pooled: 16 inputs), digits4x4-8 (its digits 0..7: fits Xylo), mnist, fashion-mnist, cifar10, cifar100, or event data "
                   "binned to --timesteps frames: nmnist, dvsgesture, event-folder")
    p.add_argument("--data-root", metavar="DIR", help="local folder of the dataset's files")
    p.add_argument("--downsample", type=int, metavar="K", help="event data: divide x and y by K (default 1)")
    p.add_argument("--frame-clip", type=int, metavar="N", help="event data: frame value min(count, N) / N "
                   "(default 1: binary frames)")
    p.add_argument("--model", help="model spec, e.g. mlp:128-128, mlp:64r-32 (r: recurrent weights), rmlp:64 (all layers recurrent) or conv:32c3-64c3s2-64c3s2")
    p.add_argument("--profile", metavar="NAME|PATH", help="device profile (default hardreset-noisy)")
    p.add_argument("--timesteps", type=int, help="time steps per sample (default 4)")
    p.add_argument("--epochs", type=int, help="epochs (default 20)")
    p.add_argument("--batch-size", type=int, help="batch size (default 64)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"))
    p.add_argument("--lr", type=float, help="learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--no-noise", action="store_true",
                   help="train on the nominal chip: number formats but no variation or noise")
    p.add_argument("--chip-pool", type=int, metavar="N", help="draw training chips from a seeded pool of N "
                   "(default 0: a fresh chip every batch)")
    p.add_argument("--eval-chips", type=int, metavar="N", help="sampled chips for test_accuracy_noisy (default 8)")
    p.add_argument("--norm", choices=("none", "bn", "tdbn"), help="BN on input currents (seed 003) or tdBN")
    p.add_argument("--dropout", type=float)
    p.add_argument("--reset", choices=("hard", "soft"), help="reset kind (default: the profile's)")
    p.add_argument("--reset-grad", choices=("clip", "detach", "full"), help="reset gradient (seed 000: clip)")
    p.add_argument("--surrogate", choices=("atan", "fast_sigmoid", "rectangle", "triangle", "psg", "trsg"))
    p.add_argument("--surrogate-param", action="append", metavar="KEY=VALUE",
                   help="surrogate width parameter, e.g. alpha=2 or gamma=10")
    p.add_argument("--v-init", choices=("zero", "mp_init"), help="initial membrane (seed 004 MP-Init)")
    p.add_argument("--learn-threshold", action="store_true", help="learnable per-layer threshold")
    p.add_argument("--grad-scaling", type=float, nargs="?", const=0.1, metavar="ALPHA",
                   help="seed 001 gradient scaling with spike traces (alpha default 0.1)")
    p.add_argument("--pda", type=float, nargs="?", const=1.0, metavar="BETA",
                   help="seed 002 potential-distribution loss (beta default 1)")
    p.add_argument("--tune-width", action="store_true", help="seed 003 bisection of the fast_sigmoid width")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when the terminal is interactive)")
    p.set_defaults(func=_cmd_train, interrupted=_train_interrupted)


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues an interrupted one: the same arguments plus --resume."""
    import shlex

    args = list(argv) if "--resume" in argv else [*argv, "--resume"]
    return "neurosim " + shlex.join(args)


def _train_interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    from neurosim.train.trainer import CHECKPOINT, load_checkpoint

    if not args.out:
        return "nothing was saved (no --out)"
    checkpoint = Path(args.out) / CHECKPOINT
    config = _train_config(args)
    try:
        state = load_checkpoint(checkpoint)
    except NeurosimError:
        state = {}
    saved = state.get("config")
    if not isinstance(saved, dict) or dict(saved, epochs=config.epochs) != config.to_dict():
        return f"no checkpoint of this run in {args.out} yet; run the same command to start again"
    return (f"kept {checkpoint} (epoch {state.get('epoch')} of {config.epochs}); resume with: "
            f"{resume_command(argv)}")


def _cmd_export(args: argparse.Namespace) -> int:
    """``neurosim export``: the whole command holds the output's one-writer lock."""
    from neurosim.files import writing

    with writing(args.out):
        return _export(args)


def _export(args: argparse.Namespace) -> int:
    import json

    from neurosim.export import compile_model
    from neurosim.export.deployment import MANIFEST
    from neurosim.train.trainer import METRICS, load_run

    if (Path(args.run_dir) / MANIFEST).is_file():
        return _export_artifact_xylo(args)
    if args.format == "nir" and args.adapt and not args.profile:
        raise UsageError("--adapt converts neurons for a chip: with --format nir it needs --profile")
    if args.nir_readout is not None and args.format != "nir":
        raise UsageError("--nir-readout chooses the readout's form in a NIR graph: it needs --format nir")
    model, config, _ = load_run(args.run_dir)
    profile = args.profile or config.profile
    metrics_path = Path(args.run_dir) / METRICS
    metadata = {"source": str(args.run_dir), "training": config.to_dict()}
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        metadata["training_metrics"] = {k: metrics.get(k) for k in
                                        ("test_accuracy", "test_accuracy_noisy", "epochs", "spikes_per_sample")}
    if args.format == "nir":
        return _export_nir(args, model, metadata)
    if args.format == "xylo":
        return _export_xylo(args, model, profile, metadata)
    deployment = compile_model(model, profile, adapt=args.adapt, metadata=metadata)
    deployment.save(args.out, overwrite=args.force)
    for change in deployment.metadata.get("adapted", []):
        print(f"adapted: {change}")
    print(f"exported {len(deployment.layers)} layers to {deployment.profile.name}: {args.out}")
    return 0


def _export_nir(args: argparse.Namespace, model, metadata: dict) -> int:
    """``export --format nir``: the float model, or with --profile its compiled deployment, with
    the readout in the form ``--nir-readout`` names (:data:`~neurosim.export.nir_graph.READOUTS`)."""
    from neurosim.export import compile_model
    from neurosim.export.nir_graph import graph_notes, to_nir, write_nir

    readout = args.nir_readout or "integrator"
    if args.profile:
        deployment = compile_model(model, args.profile, adapt=args.adapt, metadata=metadata)
        for change in deployment.metadata.get("adapted", []):
            print(f"adapted: {change}")
        graph, what = to_nir(deployment, readout=readout), f"deployment on {deployment.profile.name}"
    else:
        graph, what = to_nir(model, metadata, readout=readout), "float model"
    write_nir(graph, args.out, overwrite=args.force)
    for note in graph_notes(graph):
        print(f"note: kept in NIR metadata only: {note}")
    print(f"exported the {what} as a NIR graph of {len(graph.nodes)} nodes: {args.out}")
    return 0


def _export_xylo(args: argparse.Namespace, model, profile, metadata: dict) -> int:
    """``export --format xylo``: the compiled deployment as the .npz of xylosim's XyloLayer."""
    from neurosim.export import compile_model
    from neurosim.export.xylo import config_from_deployment, save_xylo

    deployment = compile_model(model, profile, adapt=args.adapt, metadata=metadata)
    config = config_from_deployment(deployment)
    save_xylo(config, args.out, overwrite=args.force)
    for change in deployment.metadata.get("adapted", []):
        print(f"adapted: {change}")
    n_in, n_hid, n_out = config.sizes
    print(f"exported a Xylo network ({n_in} inputs, {n_hid} hidden, {n_out} outputs; {deployment.timesteps} steps "
          f"per sample) for xylosim.v2.XyloLayer: {args.out}")
    return 0


def _export_artifact_xylo(args: argparse.Namespace) -> int:
    """``export ARTIFACT --format xylo``: a deployment artifact (compiled already, e.g. imported
    from a Xylo configuration) as the .npz of xylosim's XyloLayer, per-neuron values included."""
    from neurosim.export import load_deployment
    from neurosim.export.xylo import config_from_deployment, save_xylo

    if args.format != "xylo":
        raise UsageError(f"{args.run_dir}: a deployment artifact exports only with --format xylo (a training run "
                         "exports to every format)")
    if args.profile or args.adapt:
        raise UsageError(f"{args.run_dir}: a deployment artifact is compiled for its profile already; "
                         f"{'--profile' if args.profile else '--adapt'} applies to a training run")
    deployment = load_deployment(args.run_dir)
    config = config_from_deployment(deployment)
    save_xylo(config, args.out, overwrite=args.force)
    n_in, n_hid, n_out = config.sizes
    print(f"exported a Xylo network ({n_in} inputs, {n_hid} hidden, {n_out} outputs) from the artifact "
          f"{args.run_dir} for xylosim.v2.XyloLayer: {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    """``neurosim import``: the whole command holds the output's one-writer lock."""
    from neurosim.files import writing

    with writing(args.out):
        return _import(args)


def _import(args: argparse.Namespace) -> int:
    if args.timesteps is not None and args.timesteps < 1:
        raise UsageError(f"--timesteps must be at least 1, got {args.timesteps}")
    if Path(args.file).suffix == ".npz":
        return _import_xylo(args)
    from neurosim.export.nir_graph import deployment_from_nir, import_run, read_nir

    if args.artifact:
        deployment = deployment_from_nir(read_nir(args.file), where=str(args.file))
        deployment.save(args.out, overwrite=args.force)
        print(f"imported a deployment of {len(deployment.layers)} layers on {deployment.profile.name}: {args.out}")
        return 0
    info = import_run(args.file, args.out, dataset=args.dataset, data_root=args.data_root, profile=args.profile,
                      timesteps=args.timesteps, dt=args.dt, overwrite=args.force)
    for note in info.notes:
        print(f"note: {note}")
    print(f"imported {info.spec} ({info.source}, {info.timesteps} steps, dt {info.dt:g} s): {args.out}/config.yaml, "
          "checkpoint.pt, import.yaml")
    print(f"train it further with: neurosim train --config {args.out}/config.yaml --init-from {args.out} --out NEW_DIR")
    return 0


def _import_xylo(args: argparse.Namespace) -> int:
    """``import FILE.npz --artifact --timesteps T``: a Xylo configuration (the .npz of export
    --format xylo, or one written for xylosim) as a deployment artifact that runs it bit for bit."""
    from neurosim.export.xylo import XYLO_PROFILE, deployment_from_config, load_xylo

    if not args.artifact or args.timesteps is None:
        raise UsageError(f"{args.file}: a Xylo configuration imports as a deployment artifact: give --artifact "
                         "and --timesteps T")
    config = load_xylo(args.file)
    deployment = deployment_from_config(config, args.timesteps, args.profile or XYLO_PROFILE,
                                        metadata={"source": str(args.file)})
    deployment.save(args.out, overwrite=args.force)
    varied = sorted({name for layer in deployment.layers for name in layer.per_neuron})
    n_in, n_hid, n_out = config.sizes
    print(f"imported a Xylo network ({n_in} inputs, {n_hid} hidden, {n_out} outputs; "
          f"{', '.join(varied) if varied else 'no values'} per neuron) as a deployment on "
          f"{deployment.profile.name}: {args.out}")
    return 0


def _export_interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    from neurosim.export.deployment import MANIFEST

    if getattr(args, "format", "artifact") in ("nir", "xylo"):
        what = "NIR" if args.format == "nir" else "Xylo"
        if Path(args.out).is_file():
            return f"{args.out} is a complete {what} file (never a partial one); export again with --force to replace it"
        return f"no {what} file was written to {args.out}; run the same command to export again"
    if (Path(args.out) / MANIFEST).is_file():
        return f"{args.out} holds a complete artifact (never a partial one); export again with --force to replace it"
    return f"no artifact was written to {args.out}; run the same command to export again"


EXIT_PARITY = 1
"""Exit status of ``run --check-parity`` when the engine and the training forward differ."""


def _parity_run(args: argparse.Namespace, deployment) -> Path:
    """The training run folder ``run --check-parity`` compares with: ``--run``, else the folder the
    artifact's manifest names (``metadata.source``, written by ``neurosim export``)."""
    from neurosim.export.deployment import MANIFEST

    if args.run is not None:
        run = Path(args.run)
        if not run.is_dir():
            raise UsageError(f"--run {run}: no such training run folder")
        return run
    source = deployment.metadata.get("source")
    if not source:
        raise UsageError(f"{args.artifact}: --check-parity needs the training run the artifact came from, and its "
                         f"{MANIFEST} has no metadata.source; give --run RUN_DIR")
    if not Path(source).is_dir():
        raise UsageError(f"{args.artifact}: --check-parity needs the training run the artifact came from: its {MANIFEST} "
                         f"names metadata.source {source!r}, which is not a folder here; give --run RUN_DIR")
    return Path(source)


def _cmd_run(args: argparse.Namespace) -> int:
    import json

    from neurosim.engine.evaluate import evaluate_deployment
    from neurosim.export import load_deployment
    from neurosim.train.datasets import dataset_of

    if args.chips < 1:
        raise UsageError(f"--chips must be at least 1, got {args.chips}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.run is not None and not args.check_parity:
        raise UsageError("--run names the training run for --check-parity; give --check-parity too")
    deployment = load_deployment(args.artifact)
    run_dir = _parity_run(args, deployment) if args.check_parity else None
    training = deployment.metadata.get("training", {})
    dataset = dataset_of(training, args.dataset, args.data_root, deployment.timesteps)
    report = evaluate_deployment(deployment, dataset.test, chips=args.chips, seed=args.seed,
                                 noise=not args.no_noise, batch_size=args.batch_size, progress=args.progress)
    parity = _run_parity(args, deployment, run_dir, dataset) if run_dir is not None else None
    if args.json:
        data = report.to_dict()
        if parity is not None:
            data["parity"] = {"run": str(run_dir), "spikes_compared": parity.compared,
                              "mismatch": None if parity.mismatch is None else str(parity.mismatch)}
        print(json.dumps(data, allow_nan=False))
    else:
        print(report.summary())
    if parity is not None:
        if parity.mismatch is not None:
            print(f"parity check failed: {args.artifact} vs training run {run_dir}: {parity.mismatch}", file=sys.stderr)
            return EXIT_PARITY
        print(f"parity: {parity.compared} spike values of the engine and the training forward of {run_dir} identical "
              f"on {args.chips} chips", file=sys.stderr if args.json else sys.stdout)
    overflow = report.overflowing_layers()
    if args.strict and overflow:
        raise NeurosimError(f"{args.artifact}: integer overflow (--strict): saturation/wrap events per sample in "
                            + ", ".join(f"{name} {events:.3g}" for name, events in overflow.items()))
    if args.lava:
        return _check_lava(deployment, dataset.test, args.lava)
    return 0


def _check_lava(deployment, split, samples: int) -> int:
    """``run --lava N``: the first N test samples through Lava's bit-accurate Loihi model too."""
    from neurosim.export.lava import compare_inputs_with_lava

    if samples < 0:
        raise UsageError(f"--lava must be at least 0, got {samples}")
    x = split.batches(min(samples, len(split)), None)[0][0]
    differences = compare_inputs_with_lava(deployment, x)
    if differences:
        print(f"Lava bit-accurate model: {len(differences)} differences on {len(x)} samples, first: "
              + "; ".join(differences[:3]))
        return 1
    layers = len(deployment.spiking_layers())
    print(f"Lava bit-accurate model: {len(x)} samples, spikes, u and v of {layers} spiking layer(s) equal at every "
          "step")
    return 0


def _run_parity(args: argparse.Namespace, deployment, run_dir: Path, dataset):
    """``run --check-parity``: the training forward of ``run_dir`` against the engine on the chips,
    batches and noise of the evaluation (:func:`neurosim.engine.parity.check_parity`)."""
    from neurosim.engine.parity import check_parity
    from neurosim.train.trainer import load_run

    model, _, _ = load_run(run_dir, dataset)
    return check_parity(model, deployment, dataset.test, chips=args.chips, seed=args.seed, noise=not args.no_noise,
                        batch_size=args.batch_size, progress=args.progress)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from neurosim.sweep import SweepSpec, parse_values, parse_vary, run_sweep

    spec = SweepSpec(source=str(args.source), scales=parse_values(args.scale, "--scale") if args.scale else None,
                     vary=[[k, v] for k, v in parse_vary(args.vary or [])], profile=args.profile,
                     instances=args.instances, seed=args.seed, batch_size=args.batch_size, dataset=args.dataset,
                     data_root=args.data_root, chunk=args.chunk, label=args.label)
    summary = run_sweep(spec, args.out, resume=args.resume, progress=args.progress, strict=args.strict)
    if summary:
        print(f"{'point':<34} {'accuracy mean':>13} {'p5':>7} {'p95':>7} {'spikes/sample':>14} "
              f"{'energy nJ/sample':>17}")
        for row in summary:
            setting = ", ".join(f"{k}={row[k]:g}" for k in row if k not in ("point", "instances")
                                and not k.startswith(("accuracy", "spikes", "synops", "energy", "saturations")))
            print(f"{setting:<34} {row['accuracy_mean']:>13.4f} {row['accuracy_p5']:>7.4f} {row['accuracy_p95']:>7.4f} "
                  f"{row['spikes_per_sample_mean']:>14.1f} {_energy_cell(row['energy_pj_per_sample_mean']):>17}")
        print(f"wrote {args.out}/results.csv, summary.csv, sweep.yaml, plot.png")
    return 0


def _energy_cell(pj: float) -> str:
    """Energy per sample in nJ for a table, or "unknown" (NaN: the profile has no energy figures)."""
    return "unknown" if pj != pj else f"{pj / 1e3:.3f}"


def _sweep_interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    from neurosim.sweep.runner import RESULTS

    results = Path(args.out) / RESULTS
    if not results.is_file():
        return f"no results were written to {args.out}; run the same command to start again"
    lines = results.read_bytes().count(b"\n")
    return f"kept {max(lines - 1, 0)} complete result rows in {results}; resume with: {resume_command(argv)}"


def _cmd_plot(args: argparse.Namespace) -> int:
    from neurosim.sweep import plot_sweeps

    path = plot_sweeps(args.dirs, args.out, args.label)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from neurosim.demo import run_demo

    return run_demo(out=args.out, epochs=args.epochs, chips=args.chips, seed=args.seed, progress=args.progress)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neurosim`` command."""
    parser = argparse.ArgumentParser(
        prog="neurosim",
        description="Hardware-aware simulator for deploying spiking neural networks on neuromorphic chips.")
    parser.add_argument("--version", action="version", version=f"neurosim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    profile = commands.add_parser("profile", help="list, show, validate and sample chip profiles",
                                  description="Work with device profiles (YAML chip descriptions).")
    sub = profile.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the built-in profiles",
                       description="List the built-in profiles with a one-line description each.")
    p.set_defaults(func=_cmd_profile_list)
    p = sub.add_parser("show", help="print a fully resolved profile as YAML",
                       description="Print a profile (built-in name or path) with extends: resolved, "
                                   "as YAML that loads back to the same profile.")
    p.add_argument("profile", metavar="NAME|PATH")
    p.set_defaults(func=_cmd_profile_show)
    p = sub.add_parser("validate", help="check profile files",
                       description="Validate profile files: 'ok: FILE' or one 'error: ...' line each; "
                                   "exit 0 only if all are valid, 2 otherwise.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--require-references", action="store_true",
                   help="also require a references entry for every number written in the file")
    p.set_defaults(func=_cmd_profile_validate)
    p = sub.add_parser("sample", help="sample chip instances and print their statistics",
                       description="Draw seeded chip instances of a profile for dense layers and print "
                                   "the measured variation beside the profile's.")
    p.add_argument("profile", metavar="NAME|PATH")
    p.add_argument("--layers", default="64x32,32x10", help="dense layers IN x OUT, comma separated "
                   "(default: %(default)s)")
    p.add_argument("--chips", type=int, default=16, help="number of chips (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_cmd_profile_sample)

    _add_train_parser(commands)

    p = commands.add_parser("export", help="compile a trained run to a chip's integer format, or write it as NIR "
                            "or as a Xylo configuration",
                            description="Compile the model of a training run to a fixed-point chip profile "
                                        "(BN folding, quantization, limit checks) and save the artifact. With "
                                        "--format nir write a NIR graph (needs the nir extra) instead: the float "
                                        "model, or with --profile the compiled deployment (weights are integer codes "
                                        "times their scale; codes, formats and profile in NIR metadata). What NIR "
                                        "cannot express (soft reset, refractory steps, MP-Init) is kept in metadata "
                                        "and listed. With --format xylo (profile xylo-like or one with Xylo's rules; "
                                        "one dense hidden layer of at most 1000 neurons, optionally recurrent "
                                        "(mlp:Hr), 16 inputs, 8 outputs; --adapt converts a network trained for "
                                        "another chip to Xylo's neurons and output neurons, and lists the changes) write "
                                        "the integer configuration of xylosim's XyloLayer as one .npz (weights_in, "
                                        "weights_rec, weights_out, threshold(_out), bias(_out), has_bias, "
                                        "weight_shift_inp/rec/out, dash_mem(_out), dash_syn(_out); run it with "
                                        "neurosim.export.xylo.run_xylosim, needs the xylo extra). A deployment "
                                        "artifact (e.g. from neurosim import FILE.npz --artifact) exports with "
                                        "--format xylo as it is, per-neuron thresholds, biases and dashes included.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of neurosim train (or neurosim import), or a "
                   "deployment artifact (--format xylo)")
    p.add_argument("--format", choices=("artifact", "nir", "xylo"), default="artifact",
                   help="artifact folder for neurosim run (default), NIR graph file, or Xylo .npz")
    p.add_argument("--profile", metavar="NAME|PATH", help="chip profile (default: the one it was trained for; "
                   "with --format nir: none, the float model)")
    p.add_argument("--out", required=True, metavar="DIR|FILE.nir|FILE.npz",
                   help="artifact folder, NIR file or Xylo .npz to write")
    p.add_argument("--adapt", action="store_true", help="convert a neuron model that differs from the chip's")
    p.add_argument("--nir-readout", choices=("integrator", "affine"), help="with --format nir, the readout's form: "
                   "integrator (default; NIR's I or LI node, lossless) or affine (the graph ends at the readout's "
                   "Affine and outputs its value per step, the integrator in metadata: the form snnTorch's and "
                   "SpikingJelly's import_from_nir load)")
    p.add_argument("--force", action="store_true", help="replace an existing artifact or file")
    p.set_defaults(func=_cmd_export, interrupted=_export_interrupted)

    p = commands.add_parser("import", help="turn a NIR graph into a training run (or an artifact)",
                            description="Read a NIR graph (from neurosim export --format nir, snnTorch's "
                                        "export_to_nir, ...; needs the nir extra) and write a training-run folder "
                                        "that neurosim export, run (after export), sweep and train --init-from "
                                        "accept. Time: forward Euler with the graph's dt (default 1e-4 s, "
                                        "snnTorch's). Recurrent or branching graphs, unsupported nodes and "
                                        "per-neuron parameters that differ within a layer are refused. A Xylo "
                                        "configuration FILE.npz (export --format xylo, or any configuration "
                                        "xylosim's XyloLayer takes) imports with --artifact --timesteps T as the "
                                        "deployment artifact that runs it bit for bit (per-neuron values kept).")
    p.add_argument("file", metavar="FILE.nir|FILE.npz")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (or with --artifact, artifact) to write")
    p.add_argument("--dataset", help="dataset the run uses (default: the graph's training metadata, else digits)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--profile", metavar="NAME|PATH", help="chip profile of the run (default: the graph's, else ideal)")
    p.add_argument("--timesteps", type=int, help="steps per sample (default: the graph's; required for other graphs)")
    p.add_argument("--dt", type=float, metavar="SECONDS", help="the graph's time step (default: its metadata dt, "
                   "else 1e-4)")
    p.add_argument("--artifact", action="store_true", help="the graph holds a neurosim deployment (export --format nir "
                   "--profile): write it back as the deployment artifact, integer codes exact")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=_cmd_import)

    p = commands.add_parser("run", help="run an artifact on simulated chips (integer engine)",
                            description="Evaluate a deployment artifact bit-accurately on N sampled chip "
                                        "instances of its profile, all in one vectorised pass.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--dataset", help="dataset (default: the one it was trained on)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--chips", type=int, default=16, help="chip instances (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234, help="chip seed (default: %(default)s)")
    p.add_argument("--no-noise", action="store_true", help="no dynamic noise (static variation only)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--strict", action="store_true", help="fail if any state saturated or wrapped")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (accuracy_mean/std/min/max, spikes_per_sample, "
                        "synops_per_sample, neuron_updates_per_sample, saturations_per_sample, energy_pj_per_sample "
                        "(null: unknown), chips, per-layer counts under layers, per-chip values under per_chip); "
                        "progress and notes go to stderr")
    p.add_argument("--check-parity", action="store_true",
                   help="also run the fake-quant training forward of the run the artifact came from on the same "
                        "chips, batches and noise, and exit with status 1 naming the first differing layer, step "
                        "and neuron (chip, sample)")
    p.add_argument("--run", metavar="RUN_DIR", help="with --check-parity: the training run folder (default: the "
                   "artifact's metadata.source)")
    p.add_argument("--lava", type=int, default=0, metavar="N",
                   help="also run the first N test samples through Lava's bit-accurate Loihi model and compare "
                        "every spiking layer bit for bit (loihi-like artifacts; exit 1 on a difference)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_cmd_run)

    p = commands.add_parser("sweep", help="robustness sweep over noise levels and chip instances",
                            description="Evaluate a training run (fake-quant forward) or an artifact (integer "
                                        "engine) at each noise point on N seeded chip instances. Results stream "
                                        "to DIR/results.csv; --resume continues a killed sweep. Under torchrun "
                                        "the work is sharded over the processes.",
                            epilog="Machine-readable results: DIR/results.csv (one row per point and chip instance: "
                                   "the point's settings, accuracy, spikes_per_sample, synops_per_sample, "
                                   "energy_pj_per_sample (nan where the profile has no energy figures), "
                                   "saturations_per_sample, spikes_LAYER per spiking layer, energy_pj_LAYER per layer) and DIR/summary.csv (per point: mean, "
                                   "std, min, p5, p50 and p95 over the instances of each total, the mean of each per-layer column); "
                                   "DIR/sweep.yaml "
                                   "holds the sweep's settings.")
    p.add_argument("source", metavar="SOURCE", help="training run folder or deployment artifact")
    p.add_argument("--profile", metavar="NAME|PATH", help="chip profile (default: the source's)")
    p.add_argument("--scale", metavar="S1,S2,...", help="multiply every sigma of the profile by each factor")
    p.add_argument("--vary", action="append", metavar="KEY=V1,V2,...",
                   help="sweep one profile key instead (e.g. variation.v_threshold.sigma=0,0.01); repeat for a grid")
    p.add_argument("--instances", type=int, default=16, help="chip instances per point (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="chip seed (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    p.add_argument("--dataset", help="dataset (default: the source's)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8, help="instances evaluated (and written) together")
    p.add_argument("--label", help="legend label in plots (default: the folder name)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first chip whose states saturated or wrapped (integer overflow)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=_cmd_sweep, interrupted=_sweep_interrupted)

    p = commands.add_parser("plot", help="plot one or more sweeps",
                            description="Accuracy vs noise (mean, 5-95 %% band over chips) and per-layer firing "
                                        "rates, several sweeps overlaid.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep output folders")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--label", action="append", help="legend label per DIR, in order")
    p.set_defaults(func=_cmd_plot)

    demo = commands.add_parser("demo", help="the whole path on digits in a few minutes",
                               description="Train on hardreset-noisy with and without noise in the loop, export "
                                           "both, check engine/training parity, sweep both over noise scales on "
                                           "sampled chips, and write a plot and a summary.")
    demo.add_argument("--out", default="neurosim-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=15, help="training epochs (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    demo.add_argument("--chips", type=int, default=16, help="chips per sweep point (default: %(default)s)")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    demo.set_defaults(func=_cmd_demo)
    return parser


@contextmanager
def library_warnings_held() -> Iterator[Callable[[], None]]:
    """Hold the warnings other libraries (torch, numpy, h5py, ...) raise while a command runs;
    yields the function that prints them. :func:`main` calls it when the command succeeds (or
    fails with a traceback) and drops them when it refuses its input or is interrupted, whose one
    stderr line must be the only one (torch warns "Detected pickle protocol 4 ..." on its way to
    refusing a pickle posing as a checkpoint). neurosim's own warnings (e.g.
    :class:`~neurosim.errors.BiasRangeWarning`) print as they happen."""
    held: list[tuple] = []
    with warnings.catch_warnings():
        show = warnings.showwarning

        def hold(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
            if category.__module__.split(".")[0] == "neurosim":
                show(message, category, filename, lineno, file, line)
            else:
                held.append((message, category, filename, lineno, file, line))

        def release() -> None:
            while held:
                show(*held.pop(0))

        warnings.showwarning = hold
        yield release


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurosim`` command; returns the exit status.

    A user error is one ``error: ...`` line and status 2, and nothing else on stderr (other
    libraries' warnings are dropped: :func:`library_warnings_held`). Ctrl-C (SIGINT) or SIGTERM stops the
    command cleanly (no temporary files, every file complete) with one ``interrupted ...`` line
    saying what was kept and how to resume, and status 130 (SIGINT) or 143 (SIGTERM).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    with handle_signals(), library_warnings_held() as show_warnings:
        try:
            status = args.func(args)
            show_warnings()
            return status
        except NeurosimError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
            try:
                kept = args.interrupted(args, argv) if hasattr(args, "interrupted") else ""
            except (Exception, KeyboardInterrupt):  # noqa: BLE001 - the message is best effort
                kept = ""
            print(f"interrupted by {signal.Signals(signum).name}" + (f": {one_line(kept)}" if kept else ""),
                  file=sys.stderr)
            return 128 + signum
        except BaseException:  # a bug: its traceback, with everything that led to it
            show_warnings()
            raise
        finally:
            if "torch.distributed" in sys.modules:  # leave a torchrun process group cleanly
                from neurosim.train.distributed import close_process_group
                close_process_group()


if __name__ == "__main__":
    sys.exit(main())
