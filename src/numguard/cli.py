"""numguard's command line: verify, check, selftest, update-golden, calibrate, bundle,
compare, bench.

Exit codes (also in the README):
  0  every check passed
  1  a check failed
  2  usage error (bad arguments, unknown candidate, missing file)
  3  the candidate or device is unavailable on this machine
  4  internal error (the checks could not be collected or run)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4

log = logging.getLogger("numguard")


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="numguard: %(levelname)s: %(message)s")
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"numguard {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # a crash is no verdict: exit 1 stays reserved for failed checks
        log.exception("numguard %s stopped on an internal error", args.command)
        return EXIT_INTERNAL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numguard", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="run the check tiers against a candidate")
    _candidate_args(verify)
    verify.add_argument("--tier", choices=("gate", "full"), default="gate",
                        help="gate: pre-merge (default); full: everything")
    verify.add_argument("--report", default="report", help="report folder (default: report)")
    verify.add_argument("--golden-dir", default=None, help="golden store (default: golden_images/)")
    verify.add_argument("--weights", default=None,
                        help="folder holding the real Z-Image-Turbo vae/ (default: the "
                             "Hugging Face cache, offline; else real-weight cases skip)")
    verify.set_defaults(run=cmd_verify)

    check = sub.add_parser("check", help="run one case, e.g. the replay line of a failure")
    _candidate_args(check)
    check.add_argument("--case", required=True, help="case spec as printed by a failure")
    check.add_argument("--check", default="accuracy", metavar="NAME",
                       help="the check to run on the case, as printed by a failure: "
                            "accuracy (default), layout, layout-strict, "
                            "batch-independence, determinism, side-effects, "
                            "invariance, finiteness")
    check.set_defaults(run=cmd_check)

    st = sub.add_parser("selftest", help="prove the property tiers catch faulty kernels")
    st.add_argument("--tier", choices=("gate", "full"), default="gate")
    st.add_argument("--seeds", type=int, default=10,
                    help="hypothesis seeds each correct kernel must pass (default: 10)")
    st.add_argument("--workers", type=int, default=2, help="kernels run in parallel")
    st.add_argument("--kernel", action="append", default=None,
                    help="only this kernel (repeatable); default: the whole catalogue")
    st.add_argument("--no-compile", action="store_true",
                    help="leave torch-compile out of the correct kernels (it compiles slowly)")
    st.set_defaults(run=cmd_selftest)

    upd = sub.add_parser("update-golden", help="write golden decodes with the torch baseline")
    upd.add_argument("--device", default="cpu")
    upd.add_argument("--model", default="zimage-synthetic",
                     choices=("zimage-synthetic", "zimage-turbo-vae", "zimage-turbo-pipeline"))
    upd.add_argument("--weights", default=None,
                     help="real Z-Image-Turbo weights folder (for the real-weight models)")
    upd.add_argument("--resolution", type=int, default=256)
    upd.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    upd.add_argument("--seed", type=int, default=0)
    upd.add_argument("--golden-dir", default=None)
    upd.add_argument("--force", action="store_true", help="replace an existing golden")
    upd.set_defaults(run=cmd_update_golden)

    cal = sub.add_parser("calibrate", help="measure the golden noise floor and detection "
                                           "limit, and propose thresholds")
    cal.add_argument("--device", default="cpu")
    cal.add_argument("--model", default="zimage-synthetic",
                     choices=("zimage-synthetic", "zimage-turbo-vae"))
    cal.add_argument("--weights", default=None, help="real weights (zimage-turbo-vae)")
    cal.add_argument("--dtype", action="append", choices=("float32", "bfloat16", "float16"),
                     help="repeatable (default: all three)")
    cal.add_argument("--resolution", type=int, default=256)
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--margin", type=float, default=6.0,
                     help="dB between the live floor and its threshold (default: 6)")
    cal.add_argument("--golden-margin", type=float, default=10.0,
                     help="dB between the golden floor and its threshold (default: 10)")
    cal.add_argument("--fault", type=float, default=None,
                     help="scale error of the injected faults (default: 1e-3; 1e-2 in "
                          "bf16, where 1e-3 rounds away)")
    cal.add_argument("--layers", type=int, default=None,
                     help="inject faults into the first N decoder GroupNorms only "
                          "(default: all 30)")
    cal.add_argument("--no-compile", action="store_true",
                     help="leave torch-compile out of the correct kernels")
    cal.add_argument("--json", default=None, help="also write the measurements here")
    cal.set_defaults(run=cmd_calibrate)

    bundle = sub.add_parser("bundle", help="save a candidate's outputs on fixed cases")
    _candidate_args(bundle)
    bundle.add_argument("--out", required=True, help="bundle folder to write")
    bundle.add_argument("--resolution", type=int, default=256,
                        help="decoder GroupNorm shapes at this image size (default: 256)")
    bundle.add_argument("--decode-resolution", type=int, default=256,
                        help="image size of the synthetic-VAE decode (default: 256)")
    bundle.add_argument("--force", action="store_true", help="replace an existing bundle")
    bundle.set_defaults(run=cmd_bundle)

    cmp = sub.add_parser("compare", help="compare two bundles case by case")
    cmp.add_argument("bundle_a", help="bundle folder A")
    cmp.add_argument("bundle_b", help="bundle folder B")
    cmp.add_argument("--report", default="report", help="report folder (default: report)")
    cmp.add_argument("--psnr-min", type=float, default=None,
                     help="image threshold in place of the golden thresholds' (with --ssim-min)")
    cmp.add_argument("--ssim-min", type=float, default=None)
    cmp.set_defaults(run=cmd_compare)

    bench = sub.add_parser("bench", help="time the candidate on the decoder's GroupNorms")
    _candidate_args(bench)
    bench.add_argument("--resolution", type=int, default=256,
                       help="image size whose decoder shapes are timed (default: 256)")
    bench.add_argument("--dtype", default="float32",
                       choices=("float32", "float16", "bfloat16"))
    bench.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: 2)")
    bench.add_argument("--min-run-time", type=float, default=1.0,
                       help="seconds of timed calls per figure (default: 1)")
    bench.add_argument("--no-decode", action="store_true", help="skip the VAE decode timing")
    bench.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads for the run (default: torch's default)")
    bench.add_argument("--report", default="report", help="report folder (default: report)")
    bench.set_defaults(run=cmd_bench)
    return parser


def _candidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--impl", required=True,
                   help="torch | aiter | torch-compile | torch-channels-last | auto | "
                        "package.module:Attr | path/to/file.py:Attr")
    p.add_argument("--device", default="cpu", help="torch device; ROCm GPUs are 'cuda'")


def _resolve(spec: str, device: str):
    """Resolve candidate and device, or raise UsageError / return the unavailability."""
    from numguard.candidates import CandidateError, resolve
    from numguard.device import DeviceUnavailable, check_device

    try:
        candidate = resolve(spec)
        check_device(device)
    except (CandidateError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except DeviceUnavailable as exc:
        return candidate, str(exc)
    return candidate, candidate.unavailable_reason


def _available_candidate(command: str, args):
    """The candidate of ``args.impl``, or None after saying why it cannot run here."""
    candidate, unavailable = _resolve(args.impl, args.device)
    if unavailable:
        print(f"numguard {command}: candidate {args.impl!r} is unavailable: {unavailable}",
              file=sys.stderr)
        return None
    return candidate


def cmd_verify(args) -> int:
    _check_verify_paths(args)
    candidate, unavailable = _resolve(args.impl, args.device)
    summary = _new_summary(candidate, args)
    report_dir = Path(args.report)
    if unavailable:
        summary.status, summary.reason = "unavailable", unavailable
        _finish(summary, report_dir)
        print(f"numguard verify: candidate {args.impl!r} is unavailable: {unavailable}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    tests = _tests_dir()
    results, code = _run_pytest(args, tests, report_dir)
    summary.fill(results)
    summary.artifacts["junit"] = "junit.xml"
    if (report_dir / "golden" / "index.html").is_file():
        summary.artifacts["golden_report"] = "golden/index.html"
    if (report_dir / "failures.txt").is_file():
        summary.artifacts["failures"] = "failures.txt"
    if code not in (0, 1) and summary.status != "failed":
        summary.status = "error"
        if not summary.reason:
            summary.reason = (f"pytest stopped with exit code {code} before judging "
                              f"every check; its output above says why")
    _finish(summary, report_dir)
    return {"passed": EXIT_PASSED, "failed": EXIT_FAILED}.get(summary.status, EXIT_INTERNAL)


def _check_verify_paths(args) -> None:
    """Refuse unusable paths before anything runs: a typo in --golden-dir or
    --weights must not read as the candidate failing, nor cost a property run."""
    from numguard.weights import WeightsError, find_weights

    report = Path(args.report)
    if report.exists() and not report.is_dir():
        raise UsageError(f"--report {args.report} is a file, not a folder")
    if args.golden_dir and not Path(args.golden_dir).is_dir():
        raise UsageError(
            f"--golden-dir {args.golden_dir}: no such folder (every golden case would "
            f"fail for want of a golden; numguard update-golden --golden-dir makes one)")
    if args.weights:
        try:
            find_weights(args.weights)
        except WeightsError as exc:
            raise UsageError(str(exc)) from None


def _new_summary(candidate, args):
    import torch

    from numguard.device import device_arch, device_name
    from numguard.golden import versions
    from numguard.report import Summary

    try:
        arch, name = device_arch(args.device), device_name(args.device)
    except Exception as exc:  # device unavailable: still write a summary
        arch, name = "unknown", str(exc)
    return Summary(
        status="error", candidate=candidate.spec, description=candidate.description,
        device=args.device, arch=arch, device_name=name, tier=args.tier,
        versions={**versions(), "python": sys.version.split()[0],
                  "hip": torch.version.hip, "cuda": torch.version.cuda},
        note=candidate.note,
    )


def _tests_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    tests = root / "tests"
    if not (tests / "property").is_dir():
        raise UsageError(
            f"verify runs the checks in tests/property and tests/golden of a numguard "
            f"checkout, and none was found at {tests}; install numguard from a clone "
            f"with 'pip install -e .'"
        )
    return tests


def _run_pytest(args, tests: Path, report_dir: Path):
    import pytest

    from numguard.report import ResultCollector

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "failures.txt").unlink(missing_ok=True)  # this run's failures only
    collector = ResultCollector()
    argv = [
        str(tests / "property"), str(tests / "golden"),
        f"--rootdir={tests.parent}", "-p", "no:cacheprovider", "-q", "--no-header",
        f"--impl={args.impl}", f"--device={args.device}", f"--tier={args.tier}",
        f"--junitxml={report_dir / 'junit.xml'}", "-o", "junit_family=xunit1",
        f"--failures-file={report_dir / 'failures.txt'}",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    ]
    if args.golden_dir:
        argv.append(f"--golden-dir={args.golden_dir}")
    if args.weights:
        argv.append(f"--weights={args.weights}")
    argv.append(f"--golden-report={report_dir / 'golden'}")
    print(f"numguard verify: running the {args.tier} tier against {args.impl} on "
          f"{args.device} ...", flush=True)
    code = pytest.main(argv, plugins=[collector])
    return list(collector.results.values()), int(code)


def _finish(summary, report_dir: Path) -> None:
    from numguard.ci import append_step_summary
    from numguard.report import table_rows, write_summary

    write_summary(summary, report_dir)
    append_step_summary((report_dir / "summary.md").read_text())
    width = max(len(k) for k, _ in table_rows(summary))
    print()
    print("numguard verify summary")
    for key, value in table_rows(summary):
        print(f"  {key:<{width}}  {value}")
    if summary.reason:
        print(f"  {'reason':<{width}}  {summary.reason}")
    if summary.note:
        print(f"  {'note':<{width}}  {summary.note}")
    for check in summary.checks:
        if check["outcome"] in ("failed", "error"):
            first = check["message"].strip().splitlines()
            print(f"  FAILED {check['id']}")
            for line in first[:8]:
                print(f"      {line}")
    written = dict.fromkeys(["summary.md", "summary.json", *summary.artifacts.values()])
    print(f"  report: {', '.join(str(report_dir / name) for name in written)}")


def cmd_check(args) -> int:
    from numguard.behaviour import CHECKS
    from numguard.cases import Case

    if args.check not in CHECKS:
        raise UsageError(f"--check {args.check!r} is not one of: {', '.join(CHECKS)}")
    try:
        case = Case.parse(args.case)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if case.groups < 1 or case.channels % case.groups:
        raise UsageError(
            f"case {case.spec()!r}: {case.groups} groups do not divide "
            f"{case.channels} channels (nn.GroupNorm rejects that; the bad-argument "
            f"property test covers it)")
    candidate = _available_candidate("check", args)
    if candidate is None:
        return EXIT_UNAVAILABLE
    result = CHECKS[args.check](candidate, case, args.device)
    if result.passed:
        figures = (f"error ratio {result.error_ratio:.3g} (<= 1 passes), max abs error "
                   f"{result.max_abs:.3g}; " if args.check == "accuracy" else "")
        print(f"passed ({args.check}): {figures}{case.spec()}")
        return EXIT_PASSED
    print(result.message())
    return EXIT_FAILED


def cmd_selftest(args) -> int:
    from numguard.selftest import render_table, selftest

    extra = () if args.no_compile else ("torch-compile",)
    print(f"numguard selftest: {args.tier} tier, {args.seeds} seeds per correct kernel, "
          f"{args.workers} workers ...", flush=True)
    try:
        verdicts = selftest(_tests_dir(), args.tier, args.seeds, args.workers,
                            args.kernel, extra_correct=extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(render_table(verdicts, args.tier))
    return EXIT_PASSED if all(v.ok for v in verdicts) else EXIT_FAILED


def cmd_update_golden(args) -> int:
    from numguard.device import DeviceUnavailable, device_arch
    from numguard.golden import GoldenCase, GoldenError, default_golden_root, make_golden
    from numguard.weights import WeightsError, find_weights

    try:
        arch = device_arch(args.device)
        case = GoldenCase(args.resolution, args.dtype, args.seed, args.model)
        weights = None if case.model == "zimage-synthetic" else find_weights(args.weights)[0]
    except DeviceUnavailable as exc:
        print(f"numguard update-golden: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ValueError, WeightsError) as exc:
        raise UsageError(str(exc)) from None
    if case.model != "zimage-synthetic" and weights is None:
        raise UsageError(f"{case.model} needs the real weights: pass --weights PATH")
    root = Path(args.golden_dir) if args.golden_dir else default_golden_root()
    # goldens always come from the torch baseline, never from a candidate
    try:
        path = make_golden(root, case, args.device, case.update_command(args.device),
                           weights, force=args.force)
    except GoldenError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path} ({case.id}, arch {arch})")
    return EXIT_PASSED


def cmd_calibrate(args) -> int:
    from numguard.calibrate import run_cli
    from numguard.device import DeviceUnavailable, check_device
    from numguard.weights import WeightsError

    try:
        check_device(args.device)
        return run_cli(args)
    except DeviceUnavailable as exc:
        print(f"numguard calibrate: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ValueError, WeightsError) as exc:
        raise UsageError(str(exc)) from None


def cmd_bundle(args) -> int:
    from numguard.bundle import BundleError, make_bundle, render_bundle

    candidate = _available_candidate("bundle", args)
    if candidate is None:
        return EXIT_UNAVAILABLE
    try:
        manifest = make_bundle(candidate, args.device, Path(args.out), args.resolution,
                               args.decode_resolution, force=args.force)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    print(render_bundle(manifest, Path(args.out)))
    return EXIT_PASSED


def cmd_compare(args) -> int:
    from numguard.bundle import (BundleError, compare_bundles, render_markdown,
                                 render_text, write_compare_report)
    from numguard.ci import append_step_summary

    try:
        result = compare_bundles(Path(args.bundle_a), Path(args.bundle_b),
                                 args.psnr_min, args.ssim_min)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    print(render_text(result))
    paths = write_compare_report(result, Path(args.report))
    append_step_summary(render_markdown(result))
    print(f"  report: {', '.join(str(p) for p in paths.values())}")
    return EXIT_PASSED if result.clean else EXIT_FAILED


def cmd_bench(args) -> int:
    from numguard.bench import BenchError, render_table, run_bench, write_bench
    from numguard.ci import append_step_summary

    candidate = _available_candidate("bench", args)
    if candidate is None:
        return EXIT_UNAVAILABLE
    try:
        result = run_bench(candidate, args.device, args.resolution, args.dtype,
                           args.warmup, args.min_run_time, decode=not args.no_decode,
                           threads=args.threads)
    except BenchError as exc:
        raise UsageError(str(exc)) from None
    table = render_table(result)
    print(table)
    paths = write_bench(result, Path(args.report))
    append_step_summary(table)
    print(f"saved: {', '.join(str(p) for p in paths.values())}")
    return EXIT_PASSED


if __name__ == "__main__":
    sys.exit(main())
