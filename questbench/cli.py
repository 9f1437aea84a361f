"""The questbench command line (typer): run, leaderboard, compare, export, models, suites, train, toy, doctor.
User errors print one line and exit non-zero; tracebacks are for bugs."""
from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .errors import QuestbenchError


class Format(str, Enum):  # choices as types, so --help lists them and typer refuses anything else
    md = "md"
    rich = "rich"
    csv = "csv"
    html = "html"


class ExportFormat(str, Enum):
    robustbench = "robustbench"


class Design(str, Enum):
    mean = "mean"
    split = "split"
    split_bias = "split-bias"
    cls = "cls"


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Robustness benchmark for ViTs: QUEST vs standard attention under corruptions and attacks.")


@app.command()
def run(suite: Optional[str] = typer.Argument(None, help="built-in suite name or suite TOML path (default: default)"),
        out: Optional[Path] = typer.Option(None, "--out", help="results folder (resumes if it exists; default "
                                           "runs/<suite name>)"),
        device: Optional[str] = typer.Option(None, help="auto, cpu or cuda[:N] (default: the suite's)"),
        limit: Optional[int] = typer.Option(None, help="cap every sample count at N (smoke runs)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar, no leaderboard"),
        pages: bool = typer.Option(True, "--pages/--no-pages", help="write DIR/leaderboard.md and .html at the end "
                                   "(--no-pages: results only, e.g. folders joined later by `questbench leaderboard`)"),
        registry: List[Path] = typer.Option([], help="extra registry TOML file(s)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="if DIR holds results of another configuration, "
                                       "move them aside (DIR.replaced-<time>) instead of refusing"),
        reuse: List[Path] = typer.Option([], "--reuse", help="results folder whose finished jobs of exactly this "
                                         "run's configuration (same identity hash) are copied instead of computed"),
        ranks: Optional[int] = typer.Option(None, "--ranks", min=1, help="local ranks to start when not under "
                                            "torchrun (default: on a CPU one single-threaded rank per core)")):
    """Run a suite (the built-in default when none is given), then print its leaderboard."""
    from .run import distributed
    from .run.prepare import resolve_device
    from .config.suite import load_suite

    s = load_suite(suite)
    cores = os.cpu_count() or 1
    if ranks is not None and ranks > cores:
        raise QuestbenchError(f"--ranks {ranks} is more than this machine's {cores} CPU cores (each rank is a process "
                              "with its own copy of the models and data)")
    if out is None:  # an --out given explicitly is used as given, runs/default included
        out = Path("runs") / s.name
    import torch
    nproc = distributed.local_ranks(resolve_device(device or s.device), ranks, torch.get_num_threads())
    from .run.runner import Runner
    if nproc > 1:  # the ranks are this command again, as under torchrun; this process reports
        import time
        t0 = time.perf_counter()
        from .run.outdir import check_writable, exclusive
        check_writable(out)  # before the lock makes the folder
        argv = ["run", *([suite] if suite else []), "--out", str(out), *(["--device", device] if device else []),
                *(["--limit", str(limit)] if limit is not None else []), *(["--quiet"] if quiet else []),
                *[a for r in registry for a in ("--registry", str(r))],
                *[a for r in reuse for a in ("--reuse", str(r))]]
        with exclusive(out):  # held from the check to the last rank's end: a second run cannot start in between
            summary = Runner(s, out, device=device, limit=limit, registry_files=registry, overwrite=overwrite,
                             ranks=distributed.Ranks(), reuse=reuse).preflight()
            _launch_ranks(nproc, argv, out)
        summary.wall_s = time.perf_counter() - t0
    else:
        if distributed.launched_by() is not None:
            distributed.watch_launcher()
        runner = Runner(s, out, device=device, limit=limit, quiet=quiet, registry_files=registry,
                        overwrite=overwrite, reuse=reuse)
        try:
            summary = runner.run()
        except QuestbenchError as exc:
            # every rank prepares alike: a preparation error is rank 0's to print; later ones each rank's own
            exc.silent = not runner.ranks.main and not runner.prepared
            raise
        if not runner.ranks.main or distributed.launched_by() is not None:
            return
    for note in summary.notes:
        typer.echo(note, err=True)
    board = out / "leaderboard.md"
    ran = (f"{summary.jobs_run} job(s) run, {summary.jobs_skipped} already done, {summary.wall_s:.1f} s; "
           f"results in {out}")
    if not pages:
        typer.echo(f"{ran} (no pages written: `questbench leaderboard {out}` renders them)", err=True)
        return
    if summary.jobs_run == 0 and quiet and board.is_file() and board.with_suffix(".html").is_file():
        # a resumed folder with nothing new: its pages are those results already (a 40-model study resumes its
        # finished seed folders this way; `questbench leaderboard` re-renders on demand)
        typer.echo(f"{ran}, leaderboard {board} (and .html) kept", err=True)
        return
    from .report.leaderboard import render, write_pages
    from .report.tables import compute_tables
    from .store.results import load_results
    results = load_results(out)
    tables = compute_tables(results)  # once for the three renderings (bootstrap intervals are the costly part)
    if not quiet:
        render(results, "rich", t=tables)
    write_pages(results, board, tables)
    typer.echo(f"{ran}, leaderboard {board} (and .html)", err=True)


def _launch_ranks(nproc: int, argv: list[str], out: Path) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .run import distributed
    try:
        distributed.launch(nproc, [sys.executable, "-m", "questbench.cli", *argv], out)
    except SignalException as exc:
        raise Terminated(int(exc.sigval)) from None
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        if 2 in codes:  # a user error, printed by the rank (the others were stopped)
            raise typer.Exit(2) from None
        if all(c in (130, 143) or c < 0 for c in codes):  # stopped from outside
            raise Terminated(2 if 130 in codes else 15) from None
        raise QuestbenchError(f"a rank failed (exit code {', '.join(map(str, codes))}); its traceback is above") \
            from None


@app.command()
def leaderboard(results: List[Path] = typer.Argument(..., help="results folder(s) written by `questbench run` "
                                                   "(several: one table of all their models)"),
                format: Format = typer.Option(Format.md, "--format", "-f", help="the rendering"),
                output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to FILE (md: plots beside it)"),
                images_per_cell: int = typer.Option(6, "--images-per-cell", min=0, help="html: discordant images "
                                                    "shown per side of each setting (0: none)"),
                models: Optional[str] = typer.Option(None, "--models", help="only these models, comma-separated "
                                                     "(e.g. the standard/QUEST pairs of a four-kind study)")):
    """Render the leaderboard of a results folder, or of several as one (same suite and data, other models or
    machines)."""
    from .report.leaderboard import leaderboard as lb

    chosen = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    if chosen is not None and not chosen:
        raise QuestbenchError("--models names no model")
    text = lb(list(results), format.value, str(output) if output else None, images_per_cell, chosen)
    if text is not None and output is None:
        typer.echo(text, nl=False)


@app.command()
def compare(results: List[Path] = typer.Argument(..., help="results folder(s)"),
            baseline: str = typer.Argument(..., help="baseline model name (e.g. the standard one)"),
            model: str = typer.Argument(..., help="model compared against it")):
    """Paired comparison on shared samples: delta, bootstrap 95% CI over images, McNemar / sign-flip p, Holm."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .report.compare import compare as compare_models
    from ._io import slug
    from .store.results import load_results

    res = load_results(list(results))
    df = compare_models(res, baseline, model)
    console = Console()
    mine = [j for j in res.missing_jobs if j.startswith((slug(f"{baseline}__"), slug(f"{model}__")))]
    if mine:
        console.print(f"[bold red]{len(mine)} planned job(s) of these models are missing[/bold red] (aggregates "
                      "cover only the settings both have): " + ", ".join(mine))
    console.print(f"[bold]{model} minus {baseline}[/bold] (accuracy %, delta in pp; * n too small to resolve 5 pp)")
    for evaluation, g in df.groupby("evaluation", sort=False):
        table = Table(title=evaluation, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        for c in ("setting", "base", "model", "delta", "95% CI", "p", "Holm", "n"):
            table.add_column(c, justify="left" if c == "setting" else "right", overflow="fold", no_wrap=c == "setting")
        for _, r in g.iterrows():
            table.add_row(r.setting, f"{r.baseline_acc:.1f}", f"{r.model_acc:.1f}", f"{r.delta_pp:+.2f}",
                          f"{r.ci_low:+.1f}..{r.ci_high:+.1f}", f"{r.p_value:.2g}", f"{r.p_holm:.2g}",
                          f"{r.n_images}" + ("" if r.resolves_5pp else "*"))
        console.print(table)


@app.command()
def export(results: List[Path] = typer.Argument(..., help="results folder(s) written by `questbench run`"),
           format: ExportFormat = typer.Option(ExportFormat.robustbench, "--format", help="the other tool's format"),
           out: Path = typer.Option(..., "--out", help="folder to write into"),
           dataset: Optional[str] = typer.Option(None, "--dataset", help="RobustBench's name for the run's "
                                                 "dataset (cifar10, cifar100, imagenet) when questbench's differs"),
           eps: Optional[str] = typer.Option(None, "--eps", help="the AutoAttack eps to export, e.g. 8/255 "
                                             "(default: RobustBench's for the dataset if run, else the largest)")):
    """Export results in another tool's format (RobustBench model_info JSON + unaggregated_results.csv)."""
    from .report.export import export_robustbench
    from .store.results import load_results
    from .config.suite import parse_eps

    chosen = parse_eps(eps, "--eps") if eps is not None else None
    written, notes = export_robustbench(load_results(list(results)), out, dataset, chosen)
    for note in notes:
        typer.echo(note, err=True)
    for path in written:
        typer.echo(str(path))


@app.command()
def models(registry: List[Path] = typer.Option([], help="extra registry TOML file(s)")):
    """List the checkpoint registry (built-in zoo, timm pretrained entries, your own files)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .models.registry import list_models

    console = Console()
    wide = console.width >= 120  # arch, classes and input size only where they fit beside the rest
    cols = ("name", "attention") + (("arch", "classes", "input") if wide else ()) + ("pair / source",)
    table = Table(title="questbench models", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for c in cols:
        # names whole on one line (they are what you type); pair and source fold onto further lines
        table.add_column(c, no_wrap=c != "pair / source", overflow="fold")
    for e in list_models(registry_files=registry):
        row = {"name": e.name, "attention": e.attention, "arch": e.arch, "classes": str(e.num_classes),
               "input": "x".join(map(str, e.input_size)), "pair / source": f"{e.pair or '-'}\n{e.source}"}
        table.add_row(*(row[c] for c in cols))
    console.print(table)


@app.command()
def suites():
    """List the built-in suites with a one-line description."""
    from .config.suite import list_suites

    for name, desc in list_suites():
        typer.echo(f"{name:20s} {desc}")


@app.command()
def train(attention: str = typer.Option("quest", help="attention kind"),
          seed: int = typer.Option(0), epochs: int = typer.Option(10),
          out: Path = typer.Option(Path("zoo-out"), "--out"),
          device: str = typer.Option("auto"),
          data_root: Optional[Path] = typer.Option(None, help="folder with the Fashion-MNIST IDX files"),
          download: bool = typer.Option(False, "--download", help="fetch the training split with torchvision "
                                        "(needs a network; else apt-get install dataset-fashion-mnist)"),
          train_limit: Optional[int] = typer.Option(None, help="use only the first N training images"),
          name: Optional[str] = typer.Option(None), quiet: bool = typer.Option(False, "--quiet", "-q"),
          resume: bool = typer.Option(False, "--resume", help="continue from OUT/NAME.train-state.pt (written "
                                      "after every epoch) to the weights an uninterrupted run gives"),
          precision: str = typer.Option("float32", help="float32 (TF32 off on a GPU too) or bf16 (GPU autocast)")):
    """Train a Fashion-MNIST ViT with the built-in recipe; writes safetensors + card."""
    from .run.prepare import resolve_device
    from .models.train import train_fmnist

    card = train_fmnist(attention, seed, out, epochs=epochs, device=resolve_device(device), data_root=data_root,
                        train_limit=train_limit, quiet=quiet, name=name, download=download, resume=resume,
                        precision=precision)
    typer.echo(f"{card['name']}: test top-1 {100 * card['test_top1']:.2f}% in {card['train_wall_s']:.0f} s "
               f"-> {out / card['weights']}")


@app.command()
def toy(out: Path = typer.Option(Path("runs/toy"), "--out"),
        quick: bool = typer.Option(False, "--quick", help="the small grid (a few minutes on 2 CPU cores)"),
        design: Design = typer.Option(Design.mean, "--design", help="mean (every token queries; the default), split (the "
                                   "mean design with q, k from each token's key part only, v from its value part, "
                                   "a finer lr grid with warmup), split-bias (split with a learned qkv bias, 5 x 5 "
                                   "seeds per cell) or cls (the first design: a learned query token)"),
        quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Reproduce the QUEST paper's toy example (spurious shortcut) over a learning-rate x weight-decay grid;
    a killed grid resumes from the runs already written to OUT."""
    from ._io import check_creatable
    if out.exists() and not out.is_dir():
        raise QuestbenchError(f"--out {out} exists and is not a folder")
    check_creatable(out, "--out")  # a folder holding runs.jsonl is resumed
    preset = "quick" if quick else "full"
    design = design.value
    if design != "mean":
        preset = f"{design}-quick" if quick else design
    from .toy.mean_design import run_mean_grid, write_mean_outputs
    runs = run_mean_grid(preset, out, quiet=quiet)
    write_mean_outputs(runs, preset, out)
    typer.echo(f"{len(runs)} runs; runs.csv, plots and statistics in {out / 'toy.md'}")


@app.command()
def doctor():
    """Show versions, devices and which datasets are reachable offline."""
    import torch

    from .data.fashion_mnist import DEBIAN_DIR
    from .versions import library_versions

    for k, v in library_versions().items():
        typer.echo(f"{k:18s} {v}")
    typer.echo(f"{'cuda':18s} {torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}")
    typer.echo(f"{'fashion-mnist':18s} built-in test split; train split "
               f"{'found in ' + str(DEBIAN_DIR) if DEBIAN_DIR.is_dir() else 'absent (apt install dataset-fashion-mnist)'}")
    try:
        import robustbench  # noqa: F401
        typer.echo(f"{'robustbench':18s} importable (robustbench: registry sources enabled)")
    except Exception as exc:
        typer.echo(f"{'robustbench':18s} not importable ({type(exc).__name__}); optional")


class Terminated(BaseException):
    """SIGTERM or Ctrl-C, raised in the main thread so that every `finally` runs and child processes end. Not
    a KeyboardInterrupt: typer would turn that into a silent exit 130."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _say_stopped(message: str) -> None:
    """Once per run: by the process the user started, or under torchrun by rank 0."""
    from .run.distributed import from_env, launched_by
    if launched_by() is None and from_env().main:
        typer.echo(message, err=True)


def main(argv: Optional[List[str]] = None) -> None:
    import signal

    from .run.distributed import first_to_report  # light: no torch

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)
    resume = "; finished jobs are kept: run the same command again to resume"
    try:
        code = app(args=argv, standalone_mode=False)
    except QuestbenchError as exc:
        if not getattr(exc, "silent", False) and first_to_report(str(exc)):
            typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # the file system refused a path the user gave (too long, not permitted, no space)
        name = str(exc.filename or "")
        name = name if len(name) <= 80 else name[:77] + "..."
        if first_to_report(str(exc.strerror or exc)):  # every rank that meets a full disk: said once
            typer.echo(f"error: {exc.strerror or exc}" + (f": {name}" if name else ""), err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _say_stopped(f"interrupted{resume}")
        sys.exit(130)
    except Terminated as exc:
        _say_stopped(f"{'interrupted' if exc.signum == signal.SIGINT else 'terminated'}{resume}")
        sys.exit(128 + exc.signum)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # the command-line parser's own errors (typer vendors its click: match by shape)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            typer.echo("error: " + " ".join(exc.format_message().split()), err=True)
            sys.exit(2)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
