"""The ``adamspec`` command line.

Every user error (bad hyperparameter, unknown variant, malformed case, missing
file) prints one line naming the bad value and what is allowed, and exits 2;
never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAIL = 1  # a check or gate that found a discrepancy
EXIT_USAGE = 2


class UsageError(Exception):
    """A user error reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _cmd_variants(args: argparse.Namespace) -> int:
    from adamspec.spec.catalog import entries

    rows = [e.as_json() for e in entries()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for e in entries():
        differs = _axes_summary(e.variant)
        print(f"{e.name:<{width}}  {differs:<60}  {e.citation.reference}")
    return EXIT_OK


def _axes_summary(variant: Any) -> str:
    """The axes where a variant differs from the paper's Algorithm 1, compactly."""
    from adamspec.spec.variant import Variant

    base = Variant().axes()
    parts = [
        f"{k}={v}" for k, v in variant.axes().items() if base[k] != v and k != "hyper_precision"
    ]
    parts.append(f"hyper={variant.hyper_precision.value}")
    return " ".join(parts)


def _cmd_oracle(args: argparse.Namespace) -> int:
    from adamspec.harness.case import load_case, run_case

    if args.case == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.case, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read case file {args.case!r}: {exc.strerror}") from None
    answer = run_case(load_case(text), digits=args.digits)
    json.dump(answer, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return EXIT_OK


def _writable_dir(path: str) -> None:
    """Fail before minutes of work, not after, when the output folder cannot be written."""
    import os

    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".adamspec-write-test")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise UsageError(f"--out {path!r} is not a writable folder: {exc.strerror}") from None


def _run_config(args: argparse.Namespace, **overrides: Any):
    from adamspec.harness.run import RunConfig

    return RunConfig(
        implementations=overrides.get("implementations", tuple(args.impl or ())),
        suite=overrides.get(
            "suite", "quick" if getattr(args, "quick", False) else getattr(args, "suite", "default")
        ),
        dtype=_precision(args),
        seed=args.seed,
        jobs=args.jobs,
        scheduler=args.scheduler,
        oracle=args.oracle,
        **_sizes(args),
    )


def _precision(args: argparse.Namespace) -> str:
    """What ``--dtype`` or ``--precision`` names (not both): a dtype, or a precision by the
    name reports give it (a preset's name for ``param=bfloat16,state=float32,...``)."""
    from adamspec.spec.precision import PrecisionError, precision_named

    text = getattr(args, "precision", None)
    if text is None:
        return args.dtype or "float32"
    if args.dtype is not None:
        raise UsageError(
            f"--dtype={args.dtype} and --precision={text} both name the dtypes; give one "
            "(--precision takes a dtype too)"
        )
    try:
        return precision_named(text).name
    except PrecisionError as exc:
        raise UsageError(f"--precision: {exc}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    """Main job: every selected implementation vs the oracle; reports to --out."""
    import time

    from adamspec.harness.run import CHECKPOINT_FOLDER, Checkpoint, run, select, summary_table
    from adamspec.reports.markdown import mixed_ulps_note, precision_text
    from adamspec.spec.precision import precision_named

    if args.list:
        for name in select(()):
            print(name)
        return EXIT_OK
    _writable_dir(args.out)
    config = _run_config(args)
    select(config.implementations)  # bad pattern: exit 2 before any work
    started = time.time()
    checkpoint = Checkpoint(os.path.join(args.out, CHECKPOINT_FOLDER), config)
    if not args.resume:
        checkpoint.clear()
    with _quiet_job(args.out, args.progress, args.resume) as progress:
        tables = run(config, progress=progress, checkpoint=checkpoint)
    log = _log_count(args.out)
    from adamspec.harness.check import time_split
    from adamspec.harness.power import power_sentence, suite_power

    power = suite_power(tables.power, config.budget)
    meta = {
        "power": power,
        "wall_s": time_split(time.time() - started, tables.seconds),
        "command": "adamspec run",
        "suite": config.suite,
        "fingerprint_suite": config.fingerprint_suite,
        "size": config.size,
        "steps": config.steps,
        "dtype": precision_named(config.dtype).param,
        "precision": config.dtype,
        "seed": config.seed,
        "jobs": config.jobs,
        "oracle": config.oracle,
        "oracle_fallback_rate": _mean_fallback(tables.summary),
        "implementations": sorted({r["implementation"] for r in tables.summary}),
        "duration_s": round(time.time() - started, 1),
        "adamspec_version": _version(),
        "framework_log": str(log.path),
        "framework_warnings": log.warnings,
    }
    paths = tables.write(args.out, meta)
    checkpoint.clear()  # the reports hold everything now
    print(f"precision: {precision_text([config.dtype])}{mixed_ulps_note([config.dtype])}")
    print(summary_table(tables))
    if config.oracle == "fast":
        print(f"oracle: fast, {meta['oracle_fallback_rate']:.3%} of element-steps left to mpmath")
    print(f"power of the passing cases: {power_sentence(power)}")
    shown = [str(p) for name, p in paths.items() if name not in tables.counterexamples]
    print(f"reports: {', '.join(shown)}")
    if tables.counterexamples:
        print(
            f"minimal counterexamples: {len(tables.counterexamples)} in {args.out}/counterexamples/"
        )
    print(log.sentence())
    return EXIT_OK


@contextlib.contextmanager
def _quiet_job(out: str, mode: str, append: bool = False) -> Iterator[Any]:
    """A long job writing to ``out``: framework output goes to its log file, the progress
    (``--progress`` ``mode``) to the terminal; yields the progress."""
    from adamspec.harness.console import LOG_NAME, make_progress, quiet_console

    with quiet_console(os.path.join(out, LOG_NAME), append=append) as terminal:
        yield make_progress(mode, terminal)


def _log_count(out: str) -> Any:
    from adamspec.harness.console import LOG_NAME, count_log

    return count_log(os.path.join(out, LOG_NAME))


def _cmd_diff(args: argparse.Namespace) -> int:
    """Two implementations side by side: divergence, and what it comes from."""
    import time

    from adamspec.harness.diff import DiffUsageError, diff, problems_named, resolve
    from adamspec.reports.diff import diff_frame, findings, formulas_sentence, write_diff

    args.problem = args.problem or _DIFF_DEFAULTS[0].split()
    try:  # every bad argument before any work
        problems_named(args.problem, args.steps)
        resolve(args.a, "A"), resolve(args.b, "B")
    except DiffUsageError as exc:
        raise UsageError(str(exc)) from None
    _writable_dir(args.out)
    started = time.time()
    with _quiet_job(args.out, args.progress) as progress:
        result = diff(args.a, args.b, args.problem, args.steps, args.dtype, args.seed,
                      args.oracle, progress)  # fmt: skip
    log = _log_count(args.out)
    meta = {
        **result.meta(),
        "oracle": args.oracle,
        "duration_s": round(time.time() - started, 1),
        "adamspec_version": _version(),
        "framework_log": str(log.path),
        "framework_warnings": log.warnings,
    }
    paths = write_diff(args.out, result.rows, meta)
    print(formulas_sentence(meta))
    for f in findings(diff_frame(result.rows), meta):
        print(f"  {f.problem}: {f.sentence(meta)}")
    print(f"reports: {', '.join(str(p) for p in paths.values())}")
    print(log.sentence())
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from adamspec.harness.budgets import DEFAULT
    from adamspec.harness.check import check, uniform_budget, verdict_text
    from adamspec.impl.adapters.kernel_protocol import TargetError
    from adamspec.spec.precision import PrecisionError

    _writable_dir(args.out)
    budget = DEFAULT if args.budget_ulp is None else uniform_budget(args.budget_ulp)
    try:
        result = check(
            args.target,
            args.variant,
            dtype=args.dtype,
            precision=args.precision,
            grad_dtype=args.grad_dtype,
            state_dtype=args.state_dtype,
            master_dtype=args.master_dtype,
            out=args.out,
            budget=budget,
            suite=args.suite,
            seed=args.seed,
            timeout_s=args.timeout,
            resume=args.resume,
            oracle=args.oracle,
            strict_range=args.strict_range,
            scheduler=args.scheduler,
            jobs=args.jobs,
            **_sizes(args),
        )
    except (TargetError, PrecisionError) as exc:
        raise UsageError(str(exc)) from None
    print(verdict_text(result, args.out))
    return EXIT_OK if result.conforms else EXIT_FAIL


def _cmd_gate(args: argparse.Namespace) -> int:
    from adamspec.harness.gate import GateConfigError, run_gate

    _writable_dir(args.out)
    try:
        return run_gate(
            args.config, out=args.out, junit=args.junit, resume=args.resume, jobs=args.jobs,
            scheduler=args.scheduler, **_sizes(args),
        )  # fmt: skip
    except GateConfigError as exc:
        raise UsageError(str(exc)) from None


def _cmd_doctor(args: argparse.Namespace) -> int:
    from adamspec.harness.doctor import UnknownRequirement, as_json, checks, missing, table

    rows = checks()
    try:
        absent = missing(rows, args.require)
    except UnknownRequirement as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(as_json(rows) if args.json else table(rows) + "\n")
    for row in absent:
        print(f"adamspec doctor: missing: {row.name} ({row.enable})", file=sys.stderr)
    return EXIT_FAIL if absent else EXIT_OK


def _cmd_setup(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    from adamspec.impl import node_packages

    home = Path(args.home).expanduser() if args.home else None
    try:
        status = node_packages.install(home, quiet=False)
    except node_packages.NodeMissing as exc:
        raise UsageError(str(exc)) from None
    except subprocess.CalledProcessError as exc:
        print(f"adamspec setup: error: npm ci failed (exit {exc.returncode})", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        raise UsageError(f"cannot install into {exc.filename}: {exc.strerror}") from None
    versions = ", ".join(f"{k} {v}" for k, v in status.installed.items())
    print(f"TF.js packages ready in {status.home / 'node_modules'} ({versions})")
    if home is not None:
        print(f"later runs find them with: export ADAMSPEC_TFJS_HOME={status.home}")
    return EXIT_OK


def _mean_fallback(rows: list[dict[str, Any]]) -> float:
    """The mean of the cases' fast-oracle fallback rates (0 when none was measured)."""
    import math

    rates = [r["oracle_fallback_rate"] for r in rows if not math.isnan(r["oracle_fallback_rate"])]
    return sum(rates) / len(rates) if rates else 0.0


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    from adamspec.harness.run import fingerprint_rows, select

    names = select([args.impl])
    if len(names) != 1:
        raise UsageError(f"implementation {args.impl!r} matches {len(names)}; name exactly one")
    rows, sentence = fingerprint_rows(names[0], _run_config(args, implementations=tuple(names)))
    if args.json:
        json.dump(
            {"implementation": names[0], "summary": sentence, "variants": rows},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"{names[0]}: {sentence}")
    width = max((len(r["variant"]) for r in rows), default=10)
    print(f"{'rank':>4}  {'variant':<{width}}  {'max ULP':>10}  {'param ULP':>10}  within budget")
    for r in rows:
        print(
            f"{r['rank']:>4}  {r['variant']:<{width}}  {r['max_ulp']:>10}  "
            f"{r['param_max_ulp']:>10}  {'yes' if r['within_budget'] else 'no'}"
        )
    return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adamspec")
    except PackageNotFoundError:
        return "unknown"


def _cmd_bench(args: argparse.Namespace) -> int:
    from adamspec.harness.bench import bench_impl, format_table

    if args.json:
        try:  # fail before minutes of timing, not after
            with open(args.json, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise UsageError(f"cannot write --json {args.json!r}: {exc.strerror}") from None
    if args.what == "cluster":
        from adamspec.harness.bench_cluster import bench_cluster
        from adamspec.harness.bench_cluster import format_table as cluster_table

        report = bench_cluster(
            args.size or 1 << 26,
            range(1, (args.jobs or 2) + 1),
            dtype=args.dtype,
            seed=args.seed,
            repeats=args.repeats,
            scheduler=args.scheduler,
        )
        print(cluster_table(report))
    elif args.what == "verdicts":
        report = _bench_verdicts(args)
    elif args.what == "oracle":
        from adamspec.harness.bench_oracle import bench_oracle
        from adamspec.harness.bench_oracle import format_table as oracle_table
        from adamspec.spec.precision import precision_named

        report = bench_oracle(
            args.size or 1 << 20,
            args.seed,
            dtype=precision_named(args.precision).name if args.precision else args.dtype,
            check_size=args.check_size,
            repeats=args.repeats,
            jobs=args.jobs,
            scheduler=args.scheduler,
        )
        print(oracle_table(report))
    else:
        report = bench_impl(
            args.size or 16 * 2**20,
            args.dtype,
            repeats=args.repeats,
            threads=args.threads,
            pages=args.pages,
        )
        print(format_table(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return EXIT_OK


def _bench_verdicts(args: argparse.Namespace) -> dict[str, Any]:
    """``adamspec bench verdicts``: the planted-bug kernels' diagnoses, scored."""
    from adamspec.harness.bench_verdicts import DEFAULT_KERNELS, bench_verdicts, format_table

    report = bench_verdicts(
        args.suite or "default", args.kernels or DEFAULT_KERNELS, only=args.only or (),
        seed=args.seed,
    )  # fmt: skip
    print(format_table(report))
    return report


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(float(text)) if "e" in text.lower() else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={text!r} is not an integer") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name}={value} must be a positive integer")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="adamspec",
        description="Reference-spec verification and differential testing for Adam/AMSGrad.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (
        _add_variants,
        _add_oracle,
        _add_bench,
        _add_run,
        _add_check,
        _add_diff,
        _add_gate,
        _add_fingerprint,
        _add_doctor,
        _add_setup,
    ):
        add(sub)
    return parser


def _add_variants(sub: Any) -> None:
    p = sub.add_parser("variants", help="list the catalog of documented variants")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(handler=_cmd_variants)


def _add_oracle(sub: Any) -> None:
    p = sub.add_parser("oracle", help="exact answer for a case (JSON file, or - for stdin)")
    p.add_argument("case", help="path to CASE.json, or - to read standard input")
    p.add_argument(
        "--digits", type=_digits, default=20, help="significant digits of exact values (1-1000)"
    )
    p.set_defaults(handler=_cmd_oracle)


def _add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (impl: ours vs torch; oracle: fast vs mpmath; verdicts: the "
        "diagnosis of planted-bug kernels; cluster: a full-tensor check's verification here "
        "and on 1..N Dask workers)",
    )
    p.add_argument(
        "what", choices=["impl", "oracle", "verdicts", "cluster"], help="what to benchmark"
    )
    p.add_argument(
        "--suite",
        type=_suite,
        default=None,
        help="verdicts: the problem suite the kernels run (default: default)",
    )
    p.add_argument(
        "--kernels",
        metavar="FILE",
        help="verdicts: the planted-kernel table (default: tests/kernels/planted.py)",
    )
    p.add_argument(
        "--only", action="append", metavar="NAME", help="verdicts: only this kernel (repeatable)"
    )
    p.add_argument(
        "--size",
        type=_positive_int("--size"),
        default=None,
        help="parameters (impl, default 16M) or coordinates timed (oracle, default 2^20; "
        "cluster, default 2^26)",
    )
    p.add_argument(
        "--check-size",
        type=_positive_int("--check-size"),
        default=20_000,
        help="oracle: coordinates per variant family cross-checked against mpmath "
        "(default 20,000; 1,000,000 for the full check)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of the inputs")
    p.add_argument(
        "--threads",
        type=_positive_int("--threads"),
        default=None,
        help="impl: threads for ours and torch alike (default: each one's default)",
    )
    p.add_argument(
        "--dtype", choices=["float32", "float64", "float16", "bfloat16"], default="float32"
    )
    p.add_argument(
        "--precision",
        metavar="NAME",
        type=_precision_type,
        help="oracle: a mixed precision instead of --dtype: bf16-fp32state, bf16-fp32master, "
        "fp16-fp32master or role=dtype,... (roles param, grad, state, master)",
    )
    p.add_argument(
        "--pages",
        choices=["default", "huge"],
        default="default",
        help="impl: memory pages for every side's arrays (huge: transparent huge pages for "
        "ours and torch alike; default: as each allocates them)",
    )
    p.add_argument("--repeats", type=_positive_int("--repeats"), default=7)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    _where_options(p, jobs_default=None)  # oracle: where the mpmath cross-check runs
    p.set_defaults(handler=_cmd_bench)


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="the main job: every implementation vs the oracle, reports")
    p.add_argument("--quick", action="store_true", help="the small suite (under 2 minutes)")
    p.add_argument(
        "--suite",
        type=_suite,
        default="default",
        help="problem suite: quick, default, discriminating, long, scale (default: default)",
    )
    p.add_argument("--out", default="out", help="report folder (default: out/)")
    p.add_argument(
        "--impl",
        action="append",
        metavar="PATTERN",
        help="implementations to run (glob, repeatable; default: all; see --list)",
    )
    p.add_argument("--list", action="store_true", help="list the implementations and exit")
    _size_options(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the implementations an interrupted run of this configuration finished",
    )
    _common_run_options(p)
    p.add_argument(
        "--precision",
        metavar="NAME",
        help="the dtype of each role instead of --dtype: a dtype, a preset (bf16-fp32state, "
        "bf16-fp32master, fp16-fp32master) or role=dtype,... with roles param, grad, state, "
        "master (e.g. param=bfloat16,state=float32,master=float32); implementations that do "
        "not run it are skipped",
    )
    _progress_option(p)
    # None: not given (--dtype and --precision exclude each other); float32 when neither is
    p.set_defaults(handler=_cmd_run, dtype=None)


def _add_check(sub: Any) -> None:
    p = sub.add_parser("check", help="check your own Adam kernel against the variant it claims")
    p.add_argument("target", help="module:object or path/to/file.py:object (see README)")
    p.add_argument("--variant", help="the catalog variant it implements (default: fingerprint)")
    p.add_argument("--out", default="out-check", help="report folder (default: out-check/)")
    p.add_argument(
        "--budget-ulp",
        type=_bounded_int("--budget-ulp", 0, 2**31, "0..2**31"),
        default=None,
        help="ULP budget for every state component (default: adamspec's per-component budget)",
    )
    p.add_argument("--suite", type=_suite, default="default", help="problem suite (default)")
    p.add_argument(
        "--timeout",
        type=_positive_float("--timeout"),
        default=60.0,
        help="seconds one kernel call may take before it counts as hung (default 60)",
    )
    p.add_argument("--resume", action="store_true", help="keep an interrupted check's results")
    _size_options(p)
    p.add_argument(
        "--strict-range",
        action="store_true",
        help="range cases (off only where the dtype cannot hold the exact values) fail the "
        "check (default: they pass, tier 'conforms except the dtype's range')",
    )
    _common_run_options(p)
    _precision_options(p)
    p.set_defaults(handler=_cmd_check)


#: Dtype names a role flag takes (spec.formats.FORMATS; named here so that building the
#: parser imports no numerics; tests/test_kernel_precision.py checks they agree).
_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _precision_options(p: argparse.ArgumentParser) -> None:
    """``--precision`` and the roles' dtypes of a kernel check (``--dtype`` is the param's).

    Said here or in the kernel's ``precision`` attribute; a role said twice must be said
    alike (harness.check). ``--dtype`` defaults to float32 only when nobody says it, so
    that a kernel declaring a preset runs without it."""
    p.set_defaults(dtype=None)
    p.add_argument(
        "--precision",
        type=_precision_type,
        default=None,
        metavar="PRESET|ROLE=DTYPE,...",
        help="mixed precision: bf16-fp32state, bf16-fp32master, fp16-fp32master, or "
        "param=bfloat16,state=float32,master=float32 (default: the kernel's declaration, "
        "else every array in --dtype)",
    )
    for role, what, otherwise in (
        ("grad", "gradients", "the param dtype"),
        ("state", "m, v and v_max", "the param dtype"),
        ("master", "the master weights ('none': no master copy)", "none"),
    ):
        p.add_argument(
            f"--{role}-dtype",
            choices=[*_DTYPES, "none"] if role == "master" else list(_DTYPES),
            default=None,
            help=f"dtype of {what} (default: the kernel's declaration, else {otherwise})",
        )


def _precision_type(text: str) -> str:
    from adamspec.spec.precision import PrecisionError, precision_named

    try:
        precision_named(text)
    except PrecisionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: What ``adamspec diff`` runs without --problem/--steps (those of harness.diff, named here so
#: that building the parser imports no harness module; tests/test_diff.py checks they agree).
_DIFF_DEFAULTS = ("typical tiny-near-eps quadratic mlp", 100)


def _add_diff(sub: Any) -> None:
    p = sub.add_parser(
        "diff", help="two implementations side by side: how far apart, and why (attribution)"
    )
    p.add_argument("a", metavar="A", help="an implementation (adamspec run --list) or a TARGET")
    p.add_argument("b", metavar="B", help="the implementation to compare it with")
    problems = f"problems to run (repeatable; default: {_DIFF_DEFAULTS[0]})"
    p.add_argument("--problem", action="extend", nargs="+", metavar="P", help=problems)
    p.add_argument(
        "--steps",
        type=_positive_int("--steps"),
        default=_DIFF_DEFAULTS[1],
        help=f"steps of each problem (default {_DIFF_DEFAULTS[1]})",
    )
    p.add_argument("--out", default="out-diff", help="report folder (default: out-diff/)")
    _measure_options(p)
    _progress_option(p)
    p.set_defaults(handler=_cmd_diff, problem=None)


def _add_gate(sub: Any) -> None:
    p = sub.add_parser("gate", help="CI conformance gate from a TOML config (exit 1 on news)")
    p.add_argument("config", help="the gate's TOML file (see README: CI gate)")
    p.add_argument("--junit", help="also write the JUnit XML here")
    p.add_argument("--out", default="out-gate", help="report folder (default: out-gate/)")
    p.add_argument("--resume", action="store_true", help="keep an interrupted gate's results")
    _size_options(p)
    _where_options(p)
    p.set_defaults(handler=_cmd_gate)


def _add_fingerprint(sub: Any) -> None:
    p = sub.add_parser("fingerprint", help="rank the catalog variants for one implementation")
    p.add_argument("impl", help="an implementation name (see adamspec run --list)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_run_options(p)
    p.set_defaults(handler=_cmd_fingerprint)


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="what this machine can test, and what to install for the rest"
    )
    p.add_argument("--json", action="store_true", help="print the table as JSON (for CI)")
    p.add_argument(
        "--require",
        nargs="+",
        metavar="NAME",
        default=[],
        help="exit 1 unless every NAME is available (names as the table lists them)",
    )
    p.set_defaults(handler=_cmd_doctor)


def _add_setup(sub: Any) -> None:
    p = sub.add_parser("setup", help="install what a framework needs outside pip (tfjs: npm)")
    p.add_argument("what", choices=["tfjs"], help="tfjs: the pinned TF.js packages, with npm")
    p.add_argument(
        "--home",
        metavar="DIR",
        help="install into DIR (default: $ADAMSPEC_TFJS_HOME, else ~/.cache/adamspec/tfjs); "
        "set ADAMSPEC_TFJS_HOME=DIR for later runs",
    )
    p.set_defaults(handler=_cmd_setup)


def _sizes(args: argparse.Namespace) -> dict[str, int | None]:
    """``--size`` and ``--steps`` as keyword arguments (None: each problem's own)."""
    return {"size": getattr(args, "size", None), "steps": getattr(args, "steps", None)}


def _size_options(p: argparse.ArgumentParser) -> None:
    from adamspec.harness.problems import MAX_SIZE

    allowed = f"1..{MAX_SIZE}"
    p.add_argument(
        "--size",
        type=_bounded_int("--size", 1, MAX_SIZE, allowed),
        default=None,
        help="coordinates per tensor of the suite's open-loop problems (closed-loop "
        "objectives keep their shapes; sparse tables keep their row width)",
    )
    p.add_argument(
        "--steps",
        type=_bounded_int("--steps", 1, MAX_SIZE, allowed),
        default=None,
        help="steps of every problem of the suite (default: each problem's own)",
    )


def _common_run_options(p: argparse.ArgumentParser) -> None:
    _where_options(p)
    _measure_options(p)


def _where_options(p: argparse.ArgumentParser, jobs_default: int | None = 1) -> None:
    """--jobs and --scheduler: where tasks run (harness/cluster.py, docs/cluster.md)."""
    shown = "one per CPU" if jobs_default is None else str(jobs_default)
    p.add_argument(
        "--jobs",
        type=_positive_int("--jobs"),
        default=jobs_default,
        help=f"worker processes of a local Dask cluster (default {shown}; 1: this process)",
    )
    p.add_argument(
        "--scheduler",
        type=_scheduler,
        default=None,
        help="local (a local Dask cluster of --jobs workers) or tcp://HOST:PORT (a running "
        "dask scheduler and its workers; see docs/cluster.md)",
    )


def _scheduler(text: str) -> str:
    from adamspec.harness.cluster import SchedulerError, check_address

    if text == "local":
        return text
    try:
        check_address(text)
    except SchedulerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _measure_options(p: argparse.ArgumentParser) -> None:
    """--seed, --oracle and --dtype: what a measurement depends on."""
    p.add_argument("--seed", type=_seed, default=0, help="seed of the generated problems")
    p.add_argument(
        "--oracle",
        choices=["fast", "mpmath"],
        default="fast",
        help="the certified fast oracle (default; answers identical to mpmath's) or mpmath",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float64", "float16", "bfloat16"],
        default="float32",
        help="parameter dtype (default float32)",
    )


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=["auto", "bar", "plain"],
        default="auto",
        help="a bar with the count, elapsed time and ETA on a terminal (auto), always (bar), "
        "or one plain line per finished task (plain; the default off a terminal)",
    )


def _suite(text: str) -> str:
    from adamspec.harness.problems import SUITES

    if text not in SUITES:
        raise argparse.ArgumentTypeError(
            f"--suite={text!r} is unknown; allowed: {', '.join(SUITES)}"
        )
    return text


def _bounded_int(flag: str, low: int, high: int, allowed: str):
    """An argparse type for an integer in [low, high]; messages name the flag and range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}={text!r} is not an integer ({allowed})"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag}={value} is out of range: allowed {allowed}")
        return value

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{name}={text} must be a positive finite number")
        return value

    return parse


_seed = _bounded_int("--seed", 0, 2**63 - 1, "0..2**63-1")
_digits = _bounded_int("--digits", 1, 1000, "1-1000")


def _user_errors() -> tuple[type[BaseException], ...]:
    from adamspec.harness.case import CaseError
    from adamspec.harness.cluster import SchedulerError
    from adamspec.harness.run import RunUsageError
    from adamspec.oracles import OracleInputError, RoundingUndecided
    from adamspec.spec import FormatError, HyperparameterError, UnknownVariantError, VariantError
    from adamspec.spec.precision import PrecisionError

    return (
        UsageError,
        RunUsageError,
        SchedulerError,
        CaseError,
        HyperparameterError,
        VariantError,
        UnknownVariantError,
        FormatError,
        PrecisionError,
        OracleInputError,
        RoundingUndecided,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adamspec`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except _user_errors() as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"adamspec {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
