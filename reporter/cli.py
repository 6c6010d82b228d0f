"""Command line: the only place that prints and exits."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click

from reporter import __version__, interrupts
from reporter.errors import AttnReportError, InputError
from reporter.gates import Gate, failed_gates, parse_gate, require_baseline
from reporter.settings import Settings

log = logging.getLogger("reporter")

EXIT_GATE = 1  # a --fail-on condition held
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a terminated process


def _quiet_libraries() -> None:
    """transformers and the hub print progress bars and advice we do not want in a CI log."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF dequantisation draws its own tqdm bar
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # transformers missing is reported later, at load time
        pass


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, name="attn-report")
@click.argument("model", default="smollm2-135m", required=False)
@click.option("--out", "out", default="report.html", show_default=True, metavar="PATH",
              help="Report file; its suffix (.html or .pdf) picks the format.")
@click.option("--pdf", "pdf", default=None, metavar="PATH", help="Also write a PDF here.")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Where the JSON of every number goes [default: beside the report, .json].")
@click.option("--no-json", is_flag=True, help="Do not write the JSON.")
@click.option("--markdown", "markdown", default=None, metavar="PATH",
              help="Also write a model-card section (Markdown) linking to the PDF.")
@click.option("--paper", default="a4", show_default=True, type=click.Choice(["a4", "letter"]),
              help="PDF page size.")
@click.option("--probes", "probes_file", default=None, metavar="FILE",
              help="Your own probes: UTF-8 text, one probe per block, blocks separated by blank lines.")
@click.option("--max-tokens", default=None, type=click.IntRange(min=4),
              help="Longest probe analysed [default: 1024, capped at the model's position limit].")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, mps.")
@click.option("--device-map", "device_map", default=None, type=click.Choice(["auto"]),
              help="Let accelerate spread the model over the GPUs and host memory (instead of --device).")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Weights dtype; statistics are always computed in float32.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for hub ids.")
@click.option("--trust-remote-code", is_flag=True, default=False,
              help="Allow a hub model's own Python code to run (off by default).")
@click.option("--rollout-residual", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Rollout mixing: a·A + (1−a)·I per layer.")
@click.option("--rollout-head-fusion", default="mean", show_default=True, type=click.Choice(["mean", "max", "min"]),
              help="How a layer's heads are fused for rollout.")
@click.option("--rollout-discard-ratio", default=0.0, show_default=True,
              type=click.FloatRange(0.0, 1.0, max_open=True), help="Drop this share of each row's smallest weights.")
@click.option("--rollout-position", default=None, type=click.IntRange(min=0),
              help="Decoders: also follow this token position through the layers (0-based).")
@click.option("--fail-on", "fail_on", multiple=True, metavar="COND",
              help="Exit 1 when COND holds (repeatable): gamma-outside:LO,HI | alert:CODE | "
                   "family-count:FAMILY(>|>=|<|<=|=)N | gamma-drift:X | family-changed:N (these two need "
                   "--baseline). The report is written either way.")
@click.option("--baseline", "baseline", default=None, metavar="PATH",
              help="The JSON of an earlier report: adds a 'changes since baseline' section to every output.")
@click.option("-q", "--quiet", is_flag=True, help="Print errors only.")
@click.option("-v", "--verbose", is_flag=True, help="Print progress details and tracebacks.")
@click.version_option(__version__, "--version", prog_name="attn-report")
def cli(model: str, out: str, pdf: str | None, json_path: str | None, no_json: bool, markdown: str | None,
        paper: str, probes_file: str | None,
        max_tokens: int | None, device: str, dtype: str, revision: str | None, trust_remote_code: bool,
        rollout_residual: float, rollout_head_fusion: str, rollout_discard_ratio: float,
        rollout_position: int | None, fail_on: tuple[str, ...], baseline: str | None, quiet: bool,
        verbose: bool,
        device_map: str | None = None) -> None:
    """Write a diagnostic report of MODEL's attention.

    MODEL is a builtin alias (smollm2-135m, minilm-l6), a local Hugging Face folder, a .gguf file,
    or a hub id (org/name, where the hub is reachable). Default: smollm2-135m.
    """
    interrupts.install()
    # Progress goes to a person at a terminal; in CI and scripts stderr carries only the error line.
    level = logging.ERROR if quiet else logging.DEBUG if verbose else (
        logging.INFO if sys.stderr.isatty() else logging.WARNING)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    if not verbose:  # libraries' warnings (hub retries, font subsetting) are noise in a CI log
        for noisy in ("matplotlib", "PIL", "fontTools", "weasyprint", "httpx", "urllib3", "filelock",
                      "huggingface_hub", "transformers"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from reporter.settings import DEFAULT_SETTINGS

        settings = dataclasses.replace(DEFAULT_SETTINGS, rollout_residual=rollout_residual,
                                       rollout_head_fusion=rollout_head_fusion,
                                       rollout_discard_ratio=rollout_discard_ratio, rollout_position=rollout_position)
        gates = [parse_gate(t) for t in fail_on]  # bad grammar fails before the model loads
        require_baseline(gates, baseline)
        code = _main(model, out, pdf, json_path, no_json, markdown, paper, probes_file, max_tokens, device, dtype,
                     revision, trust_remote_code, quiet, settings, gates, baseline=baseline,
                     device_map=device_map)
    except AttnReportError as exc:
        if verbose:
            log.exception("traceback:")
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if interrupts.received() == signal.SIGTERM:
            click.echo("Error: terminated (SIGTERM); no report was written.", err=True)
            sys.exit(EXIT_TERMINATED)
        click.echo("Error: interrupted; no report was written.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError:
        click.echo("Error: out of memory; lower --max-tokens or use a smaller --dtype.", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug: one line unless -v, never a half-written report
        if verbose:
            log.exception("traceback:")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        click.echo(f"Error: internal error ({type(exc).__name__}: {first}); rerun with -v and report it.",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code)


def _main(model: str, out: str, pdf: str | None, json_path: str | None, no_json: bool, markdown: str | None,
          paper: str, probes_file: str | None,
          max_tokens: int | None, device: str, dtype: str, revision: str | None, trust_remote_code: bool,
          quiet: bool, settings: Settings, gates: list[Gate], baseline: str | None = None,
          device_map: str | None = None) -> int:
    from reporter.outputs import plan_outputs
    from reporter.pipeline import DEFAULT_MAX_TOKENS, RunOptions
    inputs = [Path(model).expanduser()]
    if probes_file:
        inputs.append(Path(probes_file).expanduser())
    if baseline:  # an output may not overwrite it
        inputs.append(Path(baseline).expanduser())
    plan = dataclasses.replace(plan_outputs(out, pdf, json_path, no_json, inputs, markdown), paper=paper)
    if probes_file is not None and not Path(probes_file).expanduser().is_file():
        if Path(probes_file).expanduser().is_dir():
            raise InputError(f"--probes '{probes_file}' is a folder, not a file",
                             "give one UTF-8 text file with the probes separated by blank lines")
        raise InputError(f"probe file '{probes_file}' does not exist", "check the --probes path")
    from reporter.baseline import diff_against, read_baseline

    base = read_baseline(Path(baseline).expanduser()) if baseline else None  # a bad file fails before the load
    if not logging.getLogger("reporter").isEnabledFor(logging.DEBUG):
        _quiet_libraries()
    opts = RunOptions(model=model, probes_file=Path(probes_file).expanduser() if probes_file else None,
                      max_tokens=max_tokens or DEFAULT_MAX_TOKENS, max_tokens_given=max_tokens is not None,
                      device=device, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code,
                      device_map=device_map)
    t0 = time.perf_counter()
    from reporter.pipeline import run

    log.info("attn-report %s: analysing %s", __version__, model)
    report = run(opts, settings)
    if base is not None:
        report = dataclasses.replace(report, baseline=diff_against(base, report))
    from reporter.render import render_all

    log.info("rendering %s ...", ", ".join(p.suffix.lstrip(".") for p in plan.paths()))
    written = render_all(report, plan)
    if not quiet:
        for p in written:
            click.echo(f"wrote {p}")
    log.info("done in %.1f s (peak memory %.0f MB)", time.perf_counter() - t0, report.run.peak_rss_mb)
    fired = failed_gates(report, gates)
    for reason in fired:
        click.echo(f"Fail: {reason}", err=True)
    return EXIT_GATE if fired else 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's own usage errors also become one 'Error:' line and exit 2."""
    try:
        cli.main(args=argv, prog_name="attn-report", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Error: interrupted; no report was written.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()} (see 'attn-report --help').", err=True)
        sys.exit(2)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
