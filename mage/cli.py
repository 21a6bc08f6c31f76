"""``python -m mage <command>`` — a thin layer over the library. ``--help`` on each command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Callable

from .decoding import SamplingConfig
from .merging import DEFAULT_BETA, training_weights
from .models import DEFAULT_BASE, DTYPES
from .pools import PoolConfig
from .sweep import SweepConfig
from .tasks import TASKS
from .training import TrainConfig
from .values import KINDS, ValueConfig


def parse_weights(text: str) -> list[float]:
    """``"0.2,0.8"`` → [0.2, 0.8]; a clear error otherwise."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"weights {text!r} are not comma-separated numbers; fix: write them like 0.2,0.8"
        ) from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--max-new-tokens 0`` is refused, not read as "default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; fix: e.g. 48") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1; fix: leave the option out for the default")
    return value


def comma_list(text: str) -> tuple[str, ...]:
    """``"rs,bone"`` → ("rs", "bone")."""
    return tuple(text.split(","))


CONFIG_FIELDS = "config_fields"  # the parsed arguments' {config dataclass: {field name: dest}}, for config_args


def _field_type(config: type, name: str):
    """A field's annotated type, ``X | None`` read as X."""
    hint = typing.get_type_hints(config)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
    return hint


def config_option(parser: argparse.ArgumentParser, config: type, name: str, flag: str | None = None, **overrides):
    """Add ``flag`` (default ``--<name>``) for the field ``name`` of the dataclass ``config``: its default, type (a
    bool is a switch, a tuple comma-separated) and choices (``metadata["choices"]``, where the dataclass validates
    a fixed set) come from the field, so a default lives in one place. ``overrides`` go to ``add_argument``: help, a
    stricter type, or ``default=None`` where the default is resolved at run time (the task's, a chosen value), which
    the help then states. The help ends with the default unless it already says it. Read back with config_args."""
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    kind = _field_type(config, name)
    options: dict = {} if field.default is dataclasses.MISSING else {"default": field.default}
    if kind is bool:
        options["action"] = "store_true"
    else:
        options["type"] = comma_list if typing.get_origin(kind) is tuple else kind
    if "choices" in field.metadata:
        options["choices"] = list(field.metadata["choices"])
    options.update(overrides)
    if options.get("required"):
        options.pop("default", None)
    default, text = options.get("default"), options.get("help") or ""
    if default is not None and not isinstance(default, bool) and "default" not in text:
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        options["help"] = f"{text} (default: {shown.replace('%', '%%')})".lstrip()
    action = parser.add_argument(flag or "--" + name.replace("_", "-"), **options)
    action.config_field = (config, name)
    fields = {cls: dict(names) for cls, names in (parser.get_default(CONFIG_FIELDS) or {}).items()}
    fields.setdefault(config, {})[name] = action.dest
    parser.set_defaults(**{CONFIG_FIELDS: fields})
    return action


def config_args(args: argparse.Namespace, config: type) -> dict:
    """{field name: parsed value} of every option config_option added for ``config``'s fields."""
    return {name: getattr(args, dest) for name, dest in getattr(args, CONFIG_FIELDS, {}).get(config, {}).items()}


def _train_config(args) -> TrainConfig:
    from .tasks import get_task
    from .training import default_pool

    pool = default_pool(get_task(args.task), **config_args(args, PoolConfig), seed=args.seed)  # None: the task's
    return TrainConfig(**config_args(args, TrainConfig), pool=pool)


def cmd_train(args) -> None:
    from .training import train_adapter

    train_adapter(args.task, args.weights, args.out, _train_config(args), command=_command())


def cmd_train_set(args) -> None:
    from .policy import ingredient_dir, ingredient_names
    from .tasks import get_task
    from .training import train_adapter

    task = get_task(args.task)
    root = ingredient_dir(task, args.kind, args.beta)
    rows = training_weights(args.kind, len(task.objectives), args.beta)
    for name, weights in zip(ingredient_names(task, args.kind), rows):
        if (root / name / "mage_manifest.json").is_file() and not args.force:
            print(f"mage: {root / name} exists, skipping (use --force to retrain)")
            continue
        train_adapter(args.task, weights, root / name, _train_config(args), command=_command())


def _precision_warning(dtype: str) -> None:
    from .models import HALF_DTYPES, HALF_PRECISION_NOTE

    if dtype in HALF_DTYPES:
        print(f"mage: note: {HALF_PRECISION_NOTE}", file=sys.stderr)


def _sampling(args, task) -> SamplingConfig:
    settings = config_args(args, SamplingConfig)
    if settings["max_new_tokens"] is None:
        settings["max_new_tokens"] = task.max_new_tokens
    return SamplingConfig(**settings)


def cmd_generate(args) -> None:
    from .io import clean_text
    from .limits import check_prompt
    from .merging import normalize_weights
    from .methods import Engine, get_method
    from .models import load_tokenizer
    from .objectives import score_all, use_device
    from .tasks import get_task

    # every argument is checked before a model loads (seconds and hundreds of MB)
    task = get_task(args.task)
    sampling = _sampling(args, task)
    method = get_method(args.method)
    normalize_weights(args.weights, len(task.objectives))
    args.prompt = clean_text(args.prompt)  # invalid UTF-8 in argv arrives as surrogate escapes
    if not args.prompt.strip():
        raise SystemExit("mage generate: --prompt is empty; fix: pass the request (or article) to respond to")
    check_prompt(load_tokenizer(args.base), task, args.prompt, base=args.base, max_new_tokens=sampling.max_new_tokens)
    if method.guide is None and args.strength is not None:
        print(f"mage: note: --strength is ignored: method {method.name!r} has no guidance", file=sys.stderr)
    strength = (1.0 if args.strength is None else args.strength) if method.guide else None
    _precision_warning(args.dtype)
    use_device(args.device)
    engine = Engine(
        task, base=args.base, beta=args.beta, top_k=args.top_k_candidates, device=args.device, dtype=args.dtype
    )
    gen = engine.generate(
        args.method,
        args.weights,
        [args.prompt],
        sampling,
        strength=1.0 if strength is None else strength,
        seed=args.seed,
    )[0]
    if args.json:
        merged = engine.current
        scores = {k: v[0] for k, v in score_all(task.objectives, [args.prompt], [gen.text]).items()}
        print(
            json.dumps(
                {
                    "task": task.name,
                    "method": args.method,
                    "weights": merged.weights if merged else None,
                    "coefficients": merged.coefficients if merged else None,
                    "strength": strength,
                    "seed": args.seed,
                    "response": gen.text,
                    "finished": gen.finished,
                    "scores": scores,
                },
                ensure_ascii=False,
            )
        )
    else:
        print(gen.text)


def cmd_train_values(args) -> None:
    from .tasks import get_task
    from .training import default_pool
    from .values import train_value, value_dir

    task = get_task(args.task)
    config = ValueConfig(**config_args(args, ValueConfig), pool=default_pool(task))
    for objective in args.objective or task.objectives:
        folder = value_dir(task, args.kind) / objective
        if (folder / "mage_manifest.json").is_file() and not args.force:
            print(f"mage: {folder} exists, skipping (use --force to retrain)")
            continue
        train_value(task.name, objective, folder, config, command=_command())


def cmd_react_calibrate(args) -> None:
    from .methods import Engine
    from .react import calibrate, react_path

    from .models import fingerprint_model, fingerprint_tokenizer

    engine = Engine(args.task, base=args.base, device=args.device)
    state = calibrate(engine, prompts_per_objective=args.prompts, beta=args.beta, seed=args.seed)
    state.meta["command"] = _command()
    path = state.save_checkpoint(
        react_path(engine.task).parent,
        base_fingerprint=fingerprint_model(engine.policy.model),
        tokenizer_fingerprint=fingerprint_tokenizer(engine.policy.tokenizer),
        readme=f"# ReACT corrections — {engine.task.name}\n\n- command: `{_command()}`\n- settings: {state.meta}\n",
    )
    print(f"mage: ReACT corrections for {state.objectives} saved to {path} ({state.meta['wall_time_s']} s)")


def cmd_objectives(args) -> None:
    from .objective_checks import check_objectives, write_report
    from .objectives import PROBES, fit_probe

    if args.action == "fit-probes":
        print(json.dumps([fit_probe(name) for name in PROBES], indent=2))
    elif args.action == "fit-judges":
        from .judges import JUDGED, fit_judge

        print(json.dumps([fit_judge(name) for name in args.names or JUDGED], indent=2))
    else:
        results = check_objectives(args.names)
        print(json.dumps(results, indent=2))
        if args.write:
            write_report(results)


def cmd_table(args) -> None:
    from . import locations
    from .reports import adapter_table, ingredient_table, markdown_table

    common = dict(
        split=args.split,
        samples=args.samples,
        seed=args.seed,
        max_prompts=args.max_prompts,
        base=args.base,
        command=_command(),
    )
    if args.adapter:
        pairs = dict(item.split("=", 1) for item in args.adapter)
        result = adapter_table(
            args.task,
            pairs,
            out=Path(args.out) if args.out else locations.results() / f"{args.task}-adapters.json",
            **common,
        )
    else:
        result = ingredient_table(args.task, beta=args.beta, out=Path(args.out) if args.out else None, **common)
    print(markdown_table(result))


def cmd_evaluate(args) -> None:
    from .objectives import use_device
    from .strength import chosen_strengths
    from .sweep import run_sweep

    _precision_warning(args.dtype)
    use_device(args.device)
    methods = args.methods
    # --strength sets every guided method's strength; without it each uses the one choose-strength picked (else 1.0)
    chosen = {} if args.strength is not None else chosen_strengths(args.task, methods)
    for method, strength in chosen.items():
        print(f"mage: {method} at guidance strength {strength:g} (chosen on the validation split)")
    settings = config_args(args, SweepConfig)
    if settings["strength"] is None:
        del settings["strength"]  # SweepConfig's, for the methods without a chosen one
    config = SweepConfig(**settings, method_strengths=tuple(sorted(chosen.items())))
    result = run_sweep(config, Path(args.out) if args.out else None)
    for method, s in result.get("summary", {}).items():
        print(
            f"{method:12s} hypervolume {s['hypervolume']:.4f}  controllability {s['controllability']['score']:.3f}  "
            f"mean scalarised {s['mean_scalarised']:.4f}"
        )


def cmd_choose_strength(args) -> None:
    from .strength import choose_strength, strength_file

    strengths = [float(s) for s in args.strengths.split(",")]
    out = Path(args.out) if args.out else strength_file(args.task, args.method)
    choice = choose_strength(
        args.task,
        args.method,
        strengths,
        prompts=args.prompts,
        base=args.base,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        out=out,
        command=_command(),
    )
    for row in choice["rows"]:
        print(
            f"w={row['strength']:<5g} mean scalarised {row['mean_scalarised']:.4f}  hypervolume "
            f"{row['hypervolume']:.4f}"
        )
    print(f"chosen strength: {choice['chosen']:g} (written to {out})")


def cmd_value_check(args) -> None:
    from .reports import value_check, value_check_lines

    result = value_check(
        args.task,
        args.kind,
        split=args.split,
        samples=args.samples,
        max_prompts=args.max_prompts,
        base=args.base,
        out=Path(args.out) if args.out else None,
        command=_command(),
    )
    print(value_check_lines(result))


def cmd_lmc(args) -> None:
    from .reports import lmc_curve, lmc_lines

    a, b = (int(x) for x in args.pair.split(","))
    result = lmc_curve(
        args.task,
        args.kind,
        pair=(a, b),
        steps=args.steps,
        strength=args.strength,
        split=args.split,
        prompts=args.prompts,
        samples=args.samples,
        seed=args.seed,
        base=args.base,
        out=Path(args.out) if args.out else None,
        command=_command(),
    )
    print(lmc_lines(result))


def cmd_figures(args) -> None:
    from .plots import all_figures

    for path in all_figures(args.results, args.out, png=not args.no_png):
        print(path)


def cmd_compatibility(args) -> None:
    from .compatibility import compatibility

    strengths = [float(s) for s in args.strengths.split(",")]
    result = compatibility(
        args.task, args.kind, strengths, prompts=args.prompts, base=args.base, seed=args.seed, command=_command()
    )
    for run in result["runs"]:
        spread = "  ".join(f"{o} {v:.3f}" for o, v in run["spread"].items())
        print(f"{run['method']:>7} w={run['strength']:<4g} spread over μ: {spread}  (mean {run['mean_spread']:.3f})")


def cmd_corners(args) -> None:
    from .objectives import use_device
    from .reports import corner_markdown, corner_report

    _precision_warning(args.dtype)
    use_device(args.device)
    report = corner_report(
        args.task,
        args.methods.split(","),
        split=args.split,
        samples=args.samples,
        prompts=args.prompts,
        seed=args.seed,
        base=args.base,
        strength=args.strength,
        device=args.device,
        dtype=args.dtype,
        out=Path(args.out) if args.out else None,
        command=_command(),
    )
    print(corner_markdown(report))


def cmd_compare(args) -> None:
    from .compare import compare, markdown
    from .io import write_json_atomic
    from .sweep import results_file

    path = Path(args.results) if args.results else results_file(args.task)
    if not path.is_file():
        raise SystemExit(f"mage: {path} does not exist; fix: python -m mage evaluate --task {args.task} first")
    result, pairs, stem = json.loads(path.read_text()), None, path.stem
    if (
        args.beta_ablation
    ):  # Bone Soup at every β with results beside the main file (evaluate --beta writes <task>-beta<β>.json)
        from .compare import ablation
        from .sweep import beta_files

        variants = {f"b{beta:g}": json.loads(p.read_text()) for beta, p in beta_files(path.stem, path.parent).items()}
        if not variants:
            raise SystemExit(
                f"mage: no {path.stem}-beta<β>.json beside {path}; fix: python -m mage train-set --task {args.task} "
                "--kind backbones --beta 0.6, "
                f"then python -m mage evaluate --task {args.task} --methods bone --beta 0.6"
            )
        result, pairs = ablation(result, variants)
        stem = f"{path.stem}-beta"
    table = Path(args.table) if args.table else path.with_name(f"{path.stem}-ingredients.json")
    if not args.beta_ablation and table.is_file():  # each ingredient as a single fixed model, and the best of them
        from .compare import fixed_baselines

        try:
            result = fixed_baselines(result, json.loads(table.read_text()))
        except ValueError as err:
            if args.table:
                raise SystemExit(f"mage: {err}") from None
            print(f"mage: no fixed-model baselines: {err}")
    summary = compare(result, resamples=args.resamples, seed=args.seed, pairs=pairs)
    summary["command"] = _command()
    out = Path(args.out or path.with_name(f"{stem}-compare.json"))
    write_json_atomic(out, summary)
    print(markdown(summary))
    print(f"\n(written to {out})")


def cmd_claims(args) -> None:
    from . import locations
    from .claims import load_claims
    from .io import write_text_atomic

    table = load_claims(args.tasks.split(","), locations.results())
    out = Path(args.out) if args.out else locations.results() / "claims.md"
    write_text_atomic(out, table)
    print(table)


def cmd_pool_stats(args) -> None:
    from .reports import pool_stats

    print(
        json.dumps(
            pool_stats(
                args.task,
                base=args.base,
                ship=args.ship,
                guide_samples=args.guide_samples,
                normalize=args.normalize,
                out=args.out,
            ),
            indent=2,
        )
    )


def cmd_bench(args) -> None:
    from .bench import run_bench

    _precision_warning(args.dtype)
    for result in run_bench(args.part, repeats=args.repeats, device=args.device, dtype=args.dtype):
        print(json.dumps(result, indent=2))


def cmd_build_base(args) -> None:
    from .models import resolve_base

    print(resolve_base(args.base))


_ARGV: list[str] | None = None  # what main() parsed, when it was called with an argv rather than from the shell


def _command() -> str:
    """The command line being run, as results files record it."""
    return "python -m mage " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if _ARGV is None else _ARGV))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mage", description="mage: controllable multi-objective generation (Bone Soup, MAGE, ReACT)"
    )
    parser.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="register the papers' tasks (hh, reddit) and reward models (docs/SCALE.md)",
    )
    parser.add_argument(
        "--preset-data",
        action="append",
        default=[],
        metavar="TASK=SOURCE",
        help="a preset task's data: hub id or local JSONL",
    )
    parser.add_argument(
        "--preset-rm",
        action="append",
        default=[],
        metavar="OBJECTIVE=SOURCE",
        help="a preset objective's reward model: folder or hub id",
    )
    parser.add_argument(
        "--preset-sizes",
        default=None,
        metavar="TRAIN,VAL,TEST",
        help="prompts per split of the preset tasks (default 2000,200,500)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    task_help = f"a task: {', '.join(TASKS)}, or one a preset registers"
    base_help = "base model: embedded alias, folder or hub id"

    def device_args(p, config: type | None = None, dtype: bool = True, **overrides):
        """--device (config's field when given, else "auto") and, unless dtype=False, --dtype."""
        device_help = "auto (a GPU when present, else the CPU), cpu, cuda or cuda:N"
        if config is None:
            p.add_argument("--device", default="auto", help=device_help)
        else:
            config_option(p, config, "device", help=device_help, **overrides)
        dtype_help = "the base model's weights (16-bit rounds the folded merge; see docs/PERFORMANCE.md)"
        if dtype and config is None:
            p.add_argument("--dtype", default="float32", choices=list(DTYPES), help=dtype_help)
        elif dtype:
            config_option(p, config, "dtype", choices=list(DTYPES), help=dtype_help)

    def common_train(p):
        # training precision follows the device: fp32 on a CPU, bf16 mixed precision on a GPU that has it
        device_args(p, TrainConfig, dtype=False)
        p.add_argument("--task", required=True, help=task_help)
        config_option(p, TrainConfig, "base", help=base_help)
        config_option(p, TrainConfig, "epochs")
        config_option(p, TrainConfig, "learning_rate", "--lr", help="LoRA learning rate")
        config_option(p, TrainConfig, "rank")
        config_option(p, TrainConfig, "batch_size", help="SFT examples per step; for GRPO, completions per step")
        config_option(
            p,
            PoolConfig,
            "samples_per_prompt",
            "--samples",
            default=None,
            help="samples per training prompt in the best-of-n pool (default: the task's)",
        )
        config_option(p, PoolConfig, "max_prompts", help="use only the first N training prompts (default: the task's)")
        config_option(
            p,
            PoolConfig,
            "batch_size",
            "--pool-batch-size",
            default=None,
            help="sampling batch size of the pool (default: the task's)",
        )
        config_option(p, TrainConfig, "normalize", help="standardise rewards over the pool before mixing")
        config_option(p, TrainConfig, "seed")
        config_option(p, TrainConfig, "trainer", help="best-of-n selection SFT (bon-sft) or online GRPO (grpo)")
        config_option(p, TrainConfig, "grpo_steps")
        config_option(p, TrainConfig, "grpo_beta", help="GRPO KL penalty")
        config_option(
            p,
            TrainConfig,
            "rounds",
            help="bon-sft rounds: round k > 1 selects from the previous round's own samples (journaled per round; "
            "resumes)",
        )
        config_option(
            p,
            TrainConfig,
            "guide_samples",
            help="bon-sft round 1 also selects from N samples per prompt per objective drawn with the task's steering "
            "hint for it (context distillation; 0 = the base pool alone)",
        )

    p = add("train", cmd_train, "train one LoRA adapter for a reward-weight vector")
    common_train(p)
    p.add_argument("--weights", type=parse_weights, required=True, help="reward weights, e.g. 0.7,0.15,0.15")
    p.add_argument("--out", required=True, help="output folder")

    p = add("train-set", cmd_train_set, "train a task's experts (rows of I) or backbones (rows of B) into checkpoints/")
    common_train(p)
    p.add_argument("--kind", required=True, choices=["experts", "backbones"])
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="Bone-Soup beta (backbones only)")
    p.add_argument("--force", action="store_true", help="retrain folders that already exist")

    p = add(
        "train-values",
        cmd_train_values,
        "train a task's explicit or implicit value models (one per objective) into checkpoints/",
    )
    p.add_argument("--task", required=True, help=task_help)
    config_option(p, ValueConfig, "kind", required=True)
    p.add_argument("--objective", action="append", default=None, help="only this objective (repeatable)")
    config_option(p, ValueConfig, "base", help=base_help)
    config_option(p, ValueConfig, "epochs")
    config_option(p, ValueConfig, "learning_rate", "--lr", help="learning rate of the value models' LoRA and head")
    config_option(p, ValueConfig, "rank")
    config_option(
        p,
        ValueConfig,
        "train_prompts",
        "--max-prompts",
        help="train on the shared pool's first N prompts only (the pool is not resampled; default: all)",
    )
    config_option(
        p,
        ValueConfig,
        "train_samples",
        "--samples-per-prompt",
        help="explicit models: the first S pool samples of each prompt (default: all)",
    )
    device_args(p, ValueConfig, dtype=False)
    config_option(p, ValueConfig, "seed")
    p.add_argument("--force", action="store_true", help="retrain value models that already exist")

    p = add(
        "value-check",
        cmd_value_check,
        "are the value models informative? rank correlation of their values with the true rewards on held-out samples",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--split", default="validation")
    p.add_argument("--samples", type=int, default=2, help="base-model samples per held-out prompt")
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument("--out", default=None, help="results file (default: assets/results/<task>-values-<kind>.json)")

    p = add("lmc", cmd_lmc, "linear mode connectivity: guide with value models interpolated between two objectives")
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--pair", default="0,1", help="the two objectives, by index (e.g. 0,2)")
    p.add_argument("--steps", type=int, default=11, help="interpolation points t = 0 … 1")
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="guidance strength (default: the one chosen on validation for mage-<kind>, else 1.0)",
    )
    p.add_argument("--split", default="test")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument("--out", default=None, help="results file (default: assets/results/<task>-lmc-<kind>.json)")

    p = add(
        "react-calibrate",
        cmd_react_calibrate,
        "compute ReACT's per-objective corrections W_i, C_i for a task (unlabeled calibration)",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument(
        "--prompts", type=int, default=32, help="training prompts per objective (expert responses, teacher-forced)"
    )
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default=DEFAULT_BASE)
    device_args(p, dtype=False)

    from .methods import METHODS  # the method table names the choices

    p = add("generate", cmd_generate, "merge for a preference and generate a response")
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--method", default="bone", help=", ".join(METHODS))
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="guidance strength w of a guided method (default 1; 0 = plain decoding)",
    )
    p.add_argument("--top-k-candidates", type=int, default=10, help="candidates re-scored by explicit value guidance")
    p.add_argument(
        "--weights", type=parse_weights, required=True, help="preference, e.g. 0.2,0.8 (normalised to sum 1)"
    )
    p.add_argument("--prompt", required=True, help="the request (assistant) or the article (summary)")
    p.add_argument("--seed", type=int, default=0)
    config_option(p, SamplingConfig, "max_new_tokens", type=positive_int, default=None, help="default: the task's cap")
    config_option(p, SamplingConfig, "temperature")
    config_option(p, SamplingConfig, "top_p", help="nucleus sampling")
    config_option(p, SamplingConfig, "top_k", help="0 = off")
    config_option(p, SamplingConfig, "repetition_penalty", help="> 1 discourages repeats")
    config_option(p, SamplingConfig, "greedy", help="greedy decoding instead of sampling")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA)
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with the response and every objective's score"
    )
    device_args(p)

    p = add(
        "objectives",
        cmd_objectives,
        "validate the objectives and their judges on the test-split sets, or refit the probes / judges",
    )
    p.add_argument("action", choices=["check", "fit-probes", "fit-judges"])
    p.add_argument("--names", nargs="*", default=None, help="objectives (default: all five)")
    p.add_argument(
        "--write",
        action="store_true",
        help="write assets/objective_checks.json (the numbers docs/OBJECTIVES.md quotes)",
    )

    p = add("table", cmd_table, "expert x objective table: base model and every ingredient on a split")
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--split", default="test")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=DEFAULT_BETA)
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="label=folder; evaluate these adapters instead of the task's checkpoints",
    )
    p.add_argument(
        "--out",
        default=None,
        help="results file (default: assets/results/<task>-ingredients.json, or <task>-adapters.json with --adapter)",
    )

    p = add("evaluate", cmd_evaluate, "sweep the preference grid for each method; writes assets/results/<task>.json")
    config_option(p, SweepConfig, "task", required=True, help=task_help)
    config_option(p, SweepConfig, "methods", help="comma-separated method names")
    config_option(p, SweepConfig, "prompts", help="first N prompts of the split (default: all)")
    config_option(p, SweepConfig, "samples", help="samples per prompt")
    config_option(p, SweepConfig, "seed")
    config_option(p, SweepConfig, "split")
    config_option(
        p,
        SweepConfig,
        "strength",
        default=None,
        help=f"guidance strength of every guided method (default: each method's choice in "
        f"assets/results/<task>-strength-<method>.json, else {SweepConfig.strength})",
    )
    config_option(p, SweepConfig, "max_new_tokens", type=positive_int, help="default: the task's cap")
    config_option(p, SweepConfig, "batch_size", help="generation batch size")
    config_option(
        p, SweepConfig, "beta", help="Bone-Soup backbones to use (the β ablation: train them with train-set --beta)"
    )
    config_option(p, SweepConfig, "base", help=base_help)
    p.add_argument(
        "--out",
        default=None,
        help="results file (default: assets/results/<task>.json; with a --beta other than the default, "
        "<task>-beta<β>.json)",
    )
    # SweepConfig defaults to the CPU for library callers; the command, like the others, uses a GPU when present
    device_args(p, SweepConfig, default="auto")

    p = add(
        "choose-strength",
        cmd_choose_strength,
        "pick a guidance strength on the validation split (best mean Σ μ_i r_i over the grid)",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--method", required=True, help="a guided method, e.g. mage-i")
    p.add_argument("--strengths", default="0,0.5,1,2,4")
    p.add_argument("--prompts", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=positive_int, default=None)
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument("--out", default=None)

    p = add("figures", cmd_figures, "Plotly figures (HTML, and PNG when static export works) from the results files")
    p.add_argument("--results", default=None, help="default: assets/results beside the package ($MAGE_RESULTS)")
    p.add_argument("--out", default=None, help="default: assets/figures beside the package ($MAGE_FIGURES)")
    p.add_argument("--no-png", action="store_true")

    p = add(
        "compatibility",
        cmd_compatibility,
        "the compatibility problem: sft+ guidance at several strengths vs MAGE, how far each moves with μ",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--kind", required=True, choices=list(KINDS))
    p.add_argument("--strengths", default="0.5,1,2,4")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default=DEFAULT_BASE)

    p = add(
        "corners",
        cmd_corners,
        "corner separation: each method at every one-hot μ, how far it moves each objective toward its own corner "
        "(scorers and judges), with fluency readings and quoted replies; writes assets/results/<task>-corners.json",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--methods", default="rs,bone,mage-e,mage-i", help="comma-separated method names")
    p.add_argument("--split", default="test")
    p.add_argument("--samples", type=int, default=2, help="samples per prompt")
    p.add_argument("--prompts", type=int, default=None, help="first N prompts of the split (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="guidance strength of the guided methods (default: each one's chosen strength, else 1.0)",
    )
    p.add_argument("--base", default=DEFAULT_BASE)
    p.add_argument("--out", default=None, help="results file (default: assets/results/<task>-corners.json)")
    device_args(p)

    p = add(
        "compare",
        cmd_compare,
        "per-method hypervolume / controllability with bootstrap intervals, and the papers' pairwise comparisons",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--results", default=None, help="results file (default: assets/results/<task>.json)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--beta-ablation",
        action="store_true",
        help="compare Bone Soup (β = 0.7, from the results file) with the <task>-beta<β>.json "
        "files beside it, against one shared reference point (default out: <task>-beta-compare.json)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="default: <results stem>-compare.json beside the results file (<task>-beta-compare.json with "
        "--beta-ablation)",
    )
    p.add_argument(
        "--table",
        default=None,
        help="an expert × objective table (python -m mage table) on the sweep's prompts and seeds: each ingredient "
        "becomes a single-fixed-model baseline (default: <results stem>-ingredients.json beside the results file, when "
        "it is paired)",
    )

    p = add(
        "claims",
        cmd_claims,
        "the claims table: each paper's claim against what compare measured (scorer, judge, level, steering, "
        "Holm verdict)",
    )
    p.add_argument("--tasks", default="assistant,summary", help="comma-separated tasks with a <task>-compare.json")
    p.add_argument("--out", default=None, help="markdown file (default: assets/results/claims.md)")

    p = add("pool-stats", cmd_pool_stats, "objective means and correlations over a task's base-model training pool")
    p.add_argument("--task", required=True, help=task_help)
    config_option(p, TrainConfig, "base", help=base_help)
    p.add_argument(
        "--ship",
        action="store_true",
        help="also copy the pool beside the task's checkpoints (checkpoints/<task>/pools/), "
        "so a fresh machine trains from it instead of re-sampling",
    )
    config_option(
        p,
        TrainConfig,
        "guide_samples",
        help="also sample N per prompt per objective with the task's steering hints and report what selection from "
        "the union can teach (key 'guided')",
    )
    config_option(p, TrainConfig, "normalize", help="how the guided selection mixes rewards (as train-set would)")
    p.add_argument(
        "--out", default=None, help="results file (default: <results>/<task>-pool.json; --guide-samples: -guided)"
    )

    p = add("bench", cmd_bench, "benchmarks; results under assets/bench/")
    p.add_argument("part", nargs="?", default="all")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: the committed numbers), cuda, cuda:N or auto; other than the CPU writes "
        "<part>-<device>-<dtype>.json",
    )
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))

    p = add("build-base", cmd_build_base, "build (once) and print the path of the base model")
    p.add_argument("--base", default=DEFAULT_BASE)
    return parser


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"{what} {item!r} is not name=source; fix: e.g. "
                f"{'hh=data/hh.jsonl' if what == '--preset-data' else 'rm-helpful=models/rm'}"
            )
        out[key] = value
    return out


def install_preset(args) -> None:
    from .presets import PRESETS

    sizes = tuple(int(x) for x in args.preset_sizes.split(",")) if args.preset_sizes else None
    if sizes is not None and (len(sizes) != 3 or min(sizes) < 1):
        raise ValueError(
            f"--preset-sizes {args.preset_sizes!r}; fix: three positive counts, train,validation,test (e.g. "
            "2000,200,500)"
        )
    PRESETS[args.preset](
        data=_pairs(args.preset_data, "--preset-data"),
        reward_models=_pairs(args.preset_rm, "--preset-rm"),
        **({"sizes": sizes} if sizes else {}),
    )


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a message comes (a test may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _show_progress() -> None:
    """The library reports progress through ``logging`` (logger ``mage``); the CLI shows it on stderr, bare,
    unless the caller configured logging for ``mage`` already. Results go to stdout."""
    logger = logging.getLogger("mage")
    if not logger.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    global _ARGV
    _ARGV = None if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    _show_progress()
    try:
        if args.preset:
            install_preset(args)
        args.fn(args)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"mage {args.command}: error: {err}") from None
