"""The ``neurosim`` command (DESIGN.md §7).

Every sub-command has ``--help``. A user error (bad profile, wrong path, bad option value) is
printed as one ``error: ...`` line on stderr with exit status 2; nothing else is a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from neurosim import __version__
from neurosim.errors import NeurosimError

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from neurosim.demo import run_demo

    return run_demo(seed=args.seed, chips=args.chips)


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

    demo = commands.add_parser("demo", help="run the demo",
                               description="Show the built-in chip profiles and sampled chip statistics.")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--chips", type=int, default=16, help="chips to sample (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurosim`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NeurosimError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
