"""Reports over trained ingredients: the expert × objective table (issue: stage 1 evidence).

Every ingredient (expert i = one-hot λ on the experts; backbone j = one-hot λ on the backbones) and
the base model are evaluated on the same prompts with the same seeds, so differences are paired by
prompt; the table shows means ± standard errors and each ingredient's paired gain over the base.
"""

from __future__ import annotations

import logging
import json
import time
from pathlib import Path

from . import locations
from .evaluation import evaluate_model, mean_stderr
from .io import write_json_atomic
from .merging import DEFAULT_BETA
from .models import DEFAULT_BASE

log = logging.getLogger(__name__)


def paired_gain(point: dict, base: dict, objective: str) -> tuple[float, float]:
    """Mean and standard error of (ingredient − base) per prompt for one objective."""
    diffs = [a - b for a, b in zip(point["per_prompt"][objective], base["per_prompt"][objective])]
    return mean_stderr(diffs)


def adapter_table(
    task: str,
    adapters: dict[str, str | Path],
    *,
    split: str = "test",
    samples: int = 2,
    seed: int = 0,
    max_prompts: int | None = None,
    base: str = DEFAULT_BASE,
    out: Path | None = None,
    command: str = "",
    sampling=None,
) -> dict:
    """Evaluate the base model and each labelled adapter folder (alone, coefficient 1) on a split. Each model's
    point is journaled under the model cache as it finishes (keyed by the settings, the base model, the adapter's
    weights and the scorers' versions), so a killed run resumes with the models it had not finished."""
    from .adapters import WEIGHTS, load_adapter
    from .io import append_rows, open_journal, read_journal, sha256_text
    from .merging import Soup
    from .models import cache_dir, fingerprint_model, fingerprint_tokenizer, load_base
    from .pools import scorer_signatures
    from .tasks import get_task

    model, tokenizer = load_base(base)
    fps = dict(base_fingerprint=fingerprint_model(model), tokenizer_fingerprint=fingerprint_tokenizer(tokenizer))
    labels = list(adapters)
    loaded = [load_adapter(adapters[label], **fps) for label in labels]
    soup = Soup(model, loaded)
    objectives = list(get_task(task).objectives)
    started = time.time()
    settings = [task, split, samples, seed, max_prompts, repr(sampling), fps, scorer_signatures(get_task(task))]
    # each adapter's weights by the hash its manifest recorded and load_adapter just verified (no second read)
    digests = {"base": "base"} | {label: a.meta["files"][WEIGHTS] for label, a in zip(labels, loaded)}
    keys = {label: sha256_text(json.dumps([*settings, label, digests[label]], default=str)) for label in digests}
    journal = cache_dir() / "tables" / get_task(task).name / "points.jsonl"
    done = {r["key"]: r["point"] for r in read_journal(journal)}
    points = {}
    with open_journal(journal) as f:
        for row, label in enumerate(["base", *labels]):
            if keys[label] in done:
                log.info(f"mage: {label} on {task}/{split}: measured before, read from {journal}")
                points[label] = done[keys[label]]
                continue
            log.info(f"mage: evaluating {label} on {task}/{split}")
            soup.apply([1.0 if k == row - 1 else 0.0 for k in range(len(labels))])
            points[label] = evaluate_model(
                model,
                tokenizer,
                get_task(task),
                split=split,
                samples=samples,
                seed=seed,
                max_prompts=max_prompts,
                sampling=sampling,
                progress=True,
            )
            append_rows(f, [{"key": keys[label], "label": label, "point": points[label]}])
    judged = [f"judge:{o}" for o in objectives if f"judge:{o}" in points["base"]["per_prompt"]]
    for point in points.values():
        point["gain_over_base"] = {
            o: dict(zip(("mean", "stderr"), paired_gain(point, points["base"], o))) for o in objectives + judged
        }
    result = {
        "task": task,
        "split": split,
        "objectives": objectives,
        "samples_per_prompt": samples,
        "seed": seed,
        "adapters": {k: str(v) for k, v in adapters.items()},
        "rows": points,
        "wall_time_s": round(time.time() - started, 1),
        "command": command,
    }
    write_json_atomic(out or locations.results() / f"{task}-ingredients.json", result)
    return result


def ingredient_table(task: str, *, beta: float = DEFAULT_BETA, **kwargs) -> dict:
    """The expert × objective table of a task's committed experts and backbones."""
    from .policy import ingredient_dir, ingredient_names
    from .tasks import get_task

    t = get_task(task)
    folders = {f"expert:{n}": ingredient_dir(t, "experts") / n for n in ingredient_names(t, "experts")}
    folders |= {f"backbone:{n}": ingredient_dir(t, "backbones", beta) / n for n in ingredient_names(t, "backbones")}
    return adapter_table(task, folders, **kwargs)


def markdown_table(result: dict) -> str:
    """Means ± standard errors (and paired gains over the base) on every scorer and, where one exists, its judge."""
    if not result["rows"]:
        return ""
    first = next(iter(result["rows"].values()))
    objectives = list(result["objectives"]) + [
        f"judge:{o}" for o in result["objectives"] if f"judge:{o}" in first.get("judge_means", {})
    ]
    lines = ["| model | " + " | ".join(objectives) + " |", "|---|" + "---|" * len(objectives)]
    for label, point in result["rows"].items():
        cells = []
        for o in objectives:
            means, stderr = (
                (point["judge_means"], point["judge_stderr"])
                if o.startswith("judge:")
                else (point["means"], point["stderr"])
            )
            cell = f"{means[o]:.3f} ± {stderr[o]:.3f}"
            if label != "base":
                gain, se = point["gain_over_base"][o]["mean"], point["gain_over_base"][o]["stderr"]
                cell += f" ({gain:+.3f} ± {se:.3f})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_report(
    pool: list[dict], objectives: list[str], normalize: str = "zscore", stats: dict | None = None
) -> dict:
    """What one round of best-of-n selection from ``pool`` can teach: for each training weight vector (the
    experts' rows of I, the backbones' rows of B), the means of the samples it selects, and each objective's
    *selection separation* — its selected mean under its own expert minus the mean under the other experts. A
    model fine-tuned on the selections moves at most about that far apart, so it bounds the experts' corner
    separation before any training is spent. ``stats``: the (mean, std) to standardise with (default: the pool's)."""
    from .merging import training_weights
    from .training import select_best

    def selected(weights: list[float]) -> dict[str, float]:
        rows = select_best(pool, objectives, weights, normalize, stats=stats)
        return {o: sum(r["scores"][o] for r in rows) / len(rows) for o in objectives}

    n = len(objectives)
    experts = [selected(w) for w in training_weights("experts", n)]
    separation = {
        o: experts[i][o] - sum(experts[j][o] for j in range(n) if j != i) / (n - 1) for i, o in enumerate(objectives)
    }
    return {
        "experts": {o: experts[i] for i, o in enumerate(objectives)},
        "backbones": [selected(w) for w in training_weights("backbones", n)],
        "separation": separation,
    }


def pool_stats(
    task: str,
    *,
    base: str = DEFAULT_BASE,
    out: Path | None = None,
    ship: bool = False,
    guide_samples: int = 0,
    normalize: str = "zscore",
) -> dict:
    """Objective correlations over the base-model training pool: is the trade-off real? ``ship`` also
    copies the pool (and any guided pools) beside the task's checkpoints (:func:`mage.pools.ship_pool`).
    ``guide_samples`` adds the guided pools (:func:`mage.training.training_pool`): their means per hint, and
    what selection from the union can teach (key ``guided``), mixing rewards as training with ``normalize`` would."""
    import statistics

    from scipy.stats import pearsonr, spearmanr

    from .models import load_base
    from .pools import pool_path, ship_pool
    from .tasks import get_task
    from .training import GUIDED_TAG, TrainConfig, default_pool, guided_pools, standardize, training_pool

    t = get_task(task)
    model, tokenizer = load_base(base)
    config = TrainConfig(base=base, pool=default_pool(t), guide_samples=guide_samples, normalize=normalize)
    pool, union = training_pool(t, model, tokenizer, config)
    if ship:
        tagged = [(config.pool, "base")] + [(p, GUIDED_TAG) for p in guided_pools(t, config)]
        for p, tag in tagged:
            log.info(f"mage: pool shipped to {ship_pool(t, pool_path(t, model, p, tag))}")
    objectives = list(t.objectives)
    values = {o: [r["scores"][o] for r in pool] for o in objectives}
    pairs = {}
    for i, a in enumerate(objectives):
        for b in objectives[i + 1 :]:
            pairs[f"{a}~{b}"] = {
                "pearson": float(pearsonr(values[a], values[b])[0]),
                "spearman": float(spearmanr(values[a], values[b])[0]),
            }
    result = {
        "task": task,
        "n_samples": len(pool),
        "objectives": objectives,
        "mean": {o: sum(v) / len(v) for o, v in values.items()},
        "std": {o: statistics.pstdev(v) for o, v in values.items()},
        "finished_fraction": sum(r["finished"] for r in pool) / len(pool),
        "correlations": pairs,
        "selection": selection_report(pool, objectives),
        "command": f"python -m mage pool-stats --task {task}" + (" --ship" if ship else ""),
    }
    if guide_samples:
        by_hint: dict[str, list[dict]] = {}
        for row in union[len(pool) :]:
            by_hint.setdefault(row["hint"], []).append(row)
        result["guided"] = {
            "samples_per_prompt_per_hint": guide_samples,
            "n_samples": len(union) - len(pool),
            "hints": {
                hint: {
                    "mean": {o: sum(r["scores"][o] for r in rows) / len(rows) for o in objectives},
                    "finished_fraction": sum(r["finished"] for r in rows) / len(rows),
                }
                for hint, rows in by_hint.items()
            },
            # selection standardised over the base pool, as training does (TrainConfig.normalize)
            "normalize": normalize,
            "selection": selection_report(union, objectives, stats=standardize(pool, objectives, normalize)),
        }
        result["command"] += f" --guide-samples {guide_samples} --normalize {normalize}"
    default = locations.results() / (f"{task}-pool-guided.json" if guide_samples else f"{task}-pool.json")
    write_json_atomic(out or default, result)
    return result


def value_check(
    task: str,
    kind: str,
    *,
    split: str = "validation",
    samples: int = 2,
    max_prompts: int | None = None,
    base: str = DEFAULT_BASE,
    out: Path | None = None,
    command: str = "",
) -> dict:
    """Is each value model informative? Spearman correlation between its value (at the end and at half
    of the response) and the true reward, over held-out base-model samples (a pool on ``split``);
    plus the merged value model at μ against Σ μ_i r_i for the task's preference grid. For implicit
    models also the learned part alone, Σ log π_r − Σ log π_0 (``*_minus_base``)."""
    from scipy.stats import spearmanr

    from .methods import GuidanceBank
    from .pools import PoolConfig, sample_pool
    from .grid import preference_grid
    from .tasks import get_task
    from .training import sft_examples
    from .values import value_scores

    t = get_task(task)
    started = time.time()
    bank = GuidanceBank(t, kind, base=base)
    pool = sample_pool(
        t,
        bank.model,
        bank.tokenizer,
        PoolConfig(samples_per_prompt=samples, split=split, max_prompts=max_prompts, batch_size=t.pool_batch),
        tag="heldout",
    )
    rows = sft_examples(t, bank.tokenizer, pool)
    objectives = list(t.objectives)

    # an implicit model's log-likelihood carries the base model's fluency prior it was initialised from;
    # its learned part is log π_r − log π_0 (π_0: the base model, i.e. every value adapter at weight 0)
    prior = value_scores(bank.merged([0.0] * len(t.objectives))[0].model, kind, rows) if kind == "implicit" else None

    def correlate(weights: list[float], truth: list[float]) -> dict:
        values = value_scores(bank.merged(weights)[0].model, kind, rows)
        out = {at: float(spearmanr([v[at] for v in values], truth)[0]) for at in ("end", "half")}
        if prior is not None:
            out.update(
                {
                    f"{at}_minus_base": float(spearmanr([v[at] - b[at] for v, b in zip(values, prior)], truth)[0])
                    for at in ("end", "half")
                }
            )
        return out

    per_objective = {}
    for i, name in enumerate(objectives):
        log.info(f"mage: {kind} value model for {name} on {len(rows)} held-out samples")
        per_objective[name] = correlate(
            [1.0 if k == i else 0.0 for k in range(len(objectives))], [r["scores"][name] for r in pool]
        )
    merged = []
    for weights in preference_grid(len(objectives)):
        truth = [sum(w * r["scores"][n] for w, n in zip(weights, objectives)) for r in pool]
        merged.append({"weights": list(weights), **correlate(list(weights), truth)})
    result = {
        "task": task,
        "kind": kind,
        "split": split,
        "n_samples": len(pool),
        "samples_per_prompt": samples,
        "objectives": objectives,
        "spearman": per_objective,
        "merged": merged,
        "wall_time_s": round(time.time() - started, 1),
        "command": command,
    }
    write_json_atomic(out or locations.results() / f"{task}-values-{kind}.json", result)
    return result


def value_check_lines(result: dict) -> str:
    """A value check's per-objective rank correlations, one line each (what the CLI prints)."""
    lines = []
    for name, corr in result.get("spearman", {}).items():
        learned = (
            f"  (minus the base model: end {corr['end_minus_base']:+.3f}  half {corr['half_minus_base']:+.3f})"
            if "end_minus_base" in corr
            else ""
        )
        lines.append(f"{name:>10}: Spearman end {corr['end']:+.3f}  half {corr['half']:+.3f}{learned}")
    return "\n".join(lines)


def chord_gap(rows: list[dict], objective: str) -> dict:
    """How far an LMC curve's inner points lie above the straight line between its endpoints, for one objective.
    ``stderr`` is paired over prompts (every point scores the same prompts): each prompt's own mean gap
    over the inner points, then the standard error of those across prompts."""
    first, last = rows[0]["means"][objective], rows[-1]["means"][objective]
    inner = [r["means"][objective] - ((1 - r["t"]) * first + r["t"] * last) for r in rows[1:-1]]
    per_prompt = [
        sum(
            r["per_prompt"][objective][p]
            - ((1 - r["t"]) * rows[0]["per_prompt"][objective][p] + r["t"] * rows[-1]["per_prompt"][objective][p])
            for r in rows[1:-1]
        )
        / len(inner)
        for p in range(len(rows[0]["per_prompt"][objective]))
    ]
    mean, stderr = mean_stderr(per_prompt)
    return {"mean_gap": mean, "stderr": stderr, "fraction_above": sum(g > 0 for g in inner) / len(inner)}


def lmc_curve(
    task: str,
    kind: str,
    *,
    pair: tuple[int, int] = (0, 1),
    steps: int = 11,
    strength: float | None = None,
    split: str = "test",
    prompts: int | None = None,
    samples: int = 1,
    seed: int = 0,
    base: str = DEFAULT_BASE,
    out: Path | None = None,
    command: str = "",
) -> dict:
    """Linear mode connectivity of value models (SPEC §4): guide a fixed policy (Bone Soup at uniform μ)
    with φ(t) = (1−t) φ_a + t φ_b for t = 0 … 1 and compare each objective's achieved reward with the
    straight line between the endpoints. ``gap`` > 0 means above the chord (the paper's concave path).
    ``strength`` None = the one ``choose-strength`` picked for ``mage-<kind>`` (else 1.0). Each point is
    journaled under the model cache as it finishes, so a killed run resumes where it stopped."""
    from .io import append_rows, open_journal, read_journal, sha256_text
    from .methods import Engine, Guidance, Merge, find_method
    from .models import cache_dir, fingerprint_model
    from .strength import chosen_strength
    from .sweep import checkpoint_hash

    engine = Engine(task, base=base)
    objectives = list(engine.task.objectives)
    n = len(objectives)
    a, b = pair
    if not (0 <= a < n and 0 <= b < n and a != b):
        raise ValueError(f"pair {pair} must name two different objectives by index 0..{n - 1} of {objectives}")
    if steps < 3:
        raise ValueError(f"steps={steps}: need at least 3 points (two endpoints and one between)")
    mage = find_method(Merge("bone"), Guidance(kind))  # MAGE with this kind of guide, from the method table
    if strength is None:
        strength = chosen_strength(engine.task.name, mage)
    started = time.time()
    fingerprint = fingerprint_model(engine.policy.model)
    settings = [
        task,
        kind,
        [a, b],
        steps,
        strength,
        split,
        prompts,
        samples,
        seed,
        fingerprint,
        checkpoint_hash(engine, mage),
    ]
    journal = cache_dir() / "lmc" / engine.task.name / f"{sha256_text(json.dumps(settings))[:16]}.jsonl"
    done = {r["t"]: r for r in read_journal(journal)}
    engine.prepare("bone", [1.0 / n] * n)  # the policy stays fixed; only the guide moves
    rows = []
    with open_journal(journal) as f:
        for k in range(steps):
            t = k / (steps - 1)
            if t in done:
                rows.append(done[t])
                continue
            weights = [0.0] * n
            weights[a], weights[b] = 1.0 - t, t
            log.info(f"mage: LMC {kind} t={t:.2f} (w = {strength:g})")
            guided, guide = engine.guided(kind, weights, strength)
            point = evaluate_model(
                guided,
                engine.policy.tokenizer,
                engine.task,
                guide=guide,
                split=split,
                samples=samples,
                seed=seed,
                max_prompts=prompts,
            )
            rows.append({"t": t, "means": point["means"], "stderr": point["stderr"], "per_prompt": point["per_prompt"]})
            append_rows(f, rows[-1:])
    gaps = {o: chord_gap(rows, o) for o in objectives}
    result = {
        "task": task,
        "kind": kind,
        "pair": [objectives[a], objectives[b]],
        "policy": "bone at uniform μ",
        "strength": strength,
        "split": split,
        "n_prompts": rows[0] and len(rows[0]["per_prompt"][objectives[0]]),
        "samples_per_prompt": samples,
        "seed": seed,
        "rows": rows,
        "chord_gap": gaps,
        "wall_time_s": round(time.time() - started, 1),
        "command": command,
    }
    write_json_atomic(out or locations.results() / f"{task}-lmc-{kind}.json", result)
    return result


def lmc_lines(result: dict) -> str:
    """An LMC curve's chord gaps, one line per objective (what the CLI prints)."""
    return "\n".join(
        f"{o:>10}: mean gap above the chord {g['mean_gap']:+.4f} ± {g['stderr']:.4f}, inner points above "
        f"{g['fraction_above']:.0%}"
        for o, g in result.get("chord_gap", {}).items()
    )


def corner_separation(records: list[dict], objectives: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """How far each method moves each objective toward its own corner: per method and objective (its
    scorer and, where one exists, its judge ``judge:<o>``), objective i's mean at μ = e_i minus its mean
    over the other corners, with a standard error paired by prompt (every corner sees the same prompts
    and seeds). A method that ignores μ scores 0; the issue's bar is ≥ 0.20 on the scorer."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    n = len(objectives)
    for method in dict.fromkeys(r["method"] for r in records):
        at = {}
        for r in records:
            if r["method"] == method and sorted(r["weights"]) == [0.0] * (n - 1) + [1.0]:
                at[r["weights"].index(1.0)] = r["per_prompt"]
        if len(at) < n:
            continue  # not every corner of this method was measured
        row = {}
        for i, o in enumerate(objectives):
            for name in (o, f"judge:{o}"):
                if name not in at[i]:
                    continue
                diffs = [
                    own - sum(at[j][name][p] for j in range(n) if j != i) / (n - 1) for p, own in enumerate(at[i][name])
                ]
                row[name] = dict(zip(("mean", "stderr"), mean_stderr(diffs)))
        out[method] = row
    return out


def corner_report(
    task: str,
    methods: list[str],
    *,
    split: str = "test",
    samples: int = 2,
    prompts: int | None = None,
    seed: int = 0,
    base: str = DEFAULT_BASE,
    strength: float | None = None,
    max_new_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    out: Path | None = None,
    command: str = "",
) -> dict:
    """Every method at every corner μ = e_i (the sweep's journal makes it resumable and shares points with
    ``evaluate``): the corner separation on scorers and judges, the fluency guard's readings per corner,
    and the first prompts' replies quoted. Guided methods run at the strength ``choose-strength`` picked
    (else 1.0) unless ``strength`` is given. Writes ``<task>-corners.json``."""
    from .grid import corner_grid
    from .strength import chosen_strengths
    from .sweep import SweepConfig, run_sweep
    from .tasks import get_task

    t = get_task(task)
    objectives = list(t.objectives)
    grid = tuple(tuple(p) for p in corner_grid(len(objectives))[: len(objectives)])  # the one-hot corners only
    strengths = {m: strength for m in methods} if strength is not None else chosen_strengths(task, methods)
    config = SweepConfig(
        task=task,
        methods=tuple(methods),
        prompts=prompts,
        samples=samples,
        seed=seed,
        split=split,
        base=base,
        grid=grid,
        max_new_tokens=max_new_tokens,
        method_strengths=tuple(sorted(strengths.items())),
        device=device,
        dtype=dtype,
    )
    result = run_sweep(config, write=False)
    records = result["records"]
    corners = [
        {
            "method": r["method"],
            "weights": r["weights"],
            "strength": r.get("strength"),
            "means": r["means"],
            "judge_means": r.get("judge_means", {}),
            "fluency": r.get("fluency"),
            "mean_tokens": r.get("mean_tokens"),
            "quotes": r.get("quotes", []),
        }
        for r in records
    ]
    report = {
        "task": task,
        "split": split,
        "objectives": objectives,
        "scorers": result["scorers"],
        "samples_per_prompt": samples,
        "prompts": prompts,
        "seed": seed,
        "strengths": strengths,
        "separation": corner_separation(records, objectives),
        "corners": corners,
        "hashes": result["hashes"],
        "command": command,
    }
    write_json_atomic(out or locations.results() / f"{task}-corners.json", report)
    return report


def corner_markdown(report: dict) -> str:
    """The corner separation as a table: one row per method, scorer then judge per objective."""
    names = [n for o in report["objectives"] for n in (o, f"judge:{o}")]
    names = [n for n in names if any(n in row for row in report["separation"].values())]
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method, row in report["separation"].items():
        lines.append(
            f"| {method} | "
            + " | ".join(f"{row[n]['mean']:+.3f} ± {row[n]['stderr']:.3f}" if n in row else "—" for n in names)
            + " |"
        )
    return "\n".join(lines)
