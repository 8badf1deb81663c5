"""The paper's four protocols as one command each (`zipfast bench-paper PROTOCOL`).

    few-shot       every method × dataset × seed, trained and tested on all classes
    base2new       train on the base half of the classes, test on base and on new
    cross-dataset  train on ImageNet, evaluate that prompt on the other datasets
    ood            train on ImageNet, evaluate on ImageNet-V2/-Sketch/-A/-R

Methods: zip and zsclip (the ZIP trainer) and the image-side trainers bptvlm, bar, blackvip,
each run as its official TRAINER.NAME. Run folders follow the official scripts' layout under
--output (ZIP: <protocol dir>/ZIP/<dataset>/nctx8/seed<s>; the image-side trainers:
<protocol dir>/<TRAINER>/<dataset>/seed<s>), so finished runs are skipped exactly as the scripts
skip them and CoOp's parse_test_res.py reads them too. Every dataset's folder is checked under
--root before any job (all missing ones named at once; --skip-missing runs the others). Tables
(markdown + CSV, mean ± std over seeds; the CSV also as plain numbers) go to <output>/tables/,
accuracy-vs-queries plots (--eval-every curves of the trained methods, zero-shot as a line) to
<output>/plots/.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zipfast.config import ConfigError
from zipfast.data.imagefolder import DatasetError
from zipfast.datasets import CROSS_DATASET_TARGETS, FEWSHOT_DATASETS, OOD_DATASETS, get_spec
from zipfast.config import paper_opts
from zipfast.methods import IMAGE_TRAINERS
from zipfast.paper.sweep import Job, LocalRunner, RayRunner, run_stages
from zipfast.paper.tables import Stat, Table, average_row, curve_points, harmonic, mean_std, plot_curves, read_accuracy

PROTOCOLS = ("few-shot", "base2new", "cross-dataset", "ood")
ZIP_SIDE = {"zip": "ZIP", "zsclip": "ZeroshotCLIP"}  # methods of the ZIP trainer → official TRAINER.NAME
METHODS = {**ZIP_SIDE, **{method: name for name, method in IMAGE_TRAINERS.items()}}  # + BPTVLM, BAR, BlackVIP
NCTX = 8
CFG = "vit_b16"  # the official scripts' CFG: configs/trainers/<TRAINER>/<CFG>.yaml

log = logging.getLogger("zipfast.paper")


class Plan:
    """The settings of one protocol run: what to run and where its folders are."""

    def __init__(self, protocol: str, root, output, datasets=None, seeds=(1, 2, 3), methods=("zip",),
                 shots: int = 16, config_file: str = "", eval_every: int | None = None, opts=(), flags=(),
                 config_dir: str = "", method_flags: dict | None = None):
        """config_file: the ZIP trainer's yaml (zip, zsclip); config_dir: the official
        configs/trainers folder, from which each method reads <TRAINER>/vit_b16.yaml (ZIP/ for
        zip and zsclip, unless config_file is given); method_flags: extra flags per method."""
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ConfigError(f"--methods: unknown method(s) {', '.join(map(repr, bad)) or 'none given'}; "
                              f"bench-paper runs {', '.join(METHODS)}")
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds: give each seed once, at least one (got {list(seeds)!r}), e.g. --seeds 1,2,3")
        default = {"few-shot": FEWSHOT_DATASETS, "base2new": FEWSHOT_DATASETS,
                   "cross-dataset": CROSS_DATASET_TARGETS, "ood": OOD_DATASETS}[protocol]
        self.protocol, self.methods, self.seeds, self.shots = protocol, list(methods), list(seeds), shots
        self.datasets = [get_spec(d).key for d in (datasets or default)]
        self.root, self.output = str(Path(root).absolute()), Path(output).absolute()
        self.config_file = str(Path(config_file).absolute()) if config_file else ""
        self.eval_every, self.opts, self.flags = eval_every, list(opts), list(flags)
        self.config_dir = Path(config_dir).absolute() if config_dir else None
        self.method_flags = {m: list(f) for m, f in (method_flags or {}).items()}
        for m in self.methods:
            path = self.config_for(m)
            if path and not Path(path).is_file():
                raise ConfigError(f"--config-dir {str(self.config_dir)!r} has no {METHODS[m]} config: looked for "
                                  f"{path!r} (the official configs/trainers/<TRAINER>/{CFG}.yaml)")
            if not path and m not in ZIP_SIDE:
                log.info("%s runs without a config file: with the paper's values (%s)", METHODS[m],
                         " ".join(paper_opts(m)))

    def config_for(self, method: str) -> str:
        """The trainer yaml a method's runs read ("" = none)."""
        if method in ZIP_SIDE and self.config_file:
            return self.config_file
        if self.config_dir is None:
            return ""
        return str(self.config_dir / ("ZIP" if method in ZIP_SIDE else METHODS[method]) / f"{CFG}.yaml")

    # ------------------------------------------------------------------ folders (the scripts' layout)

    @staticmethod
    def _leaf(method, seed) -> Path:
        """seed<s>, below nctx8/ for ZIP (its scripts name the context length; the others' do not)."""
        return Path(f"nctx{NCTX}", f"seed{seed}") if method == "zip" else Path(f"seed{seed}")

    def train_dir(self, dataset, seed, role="basic", method="zip") -> Path:
        if method == "zsclip":
            return self.output / role / "zsclip" / "ZeroshotCLIP" / dataset
        sub = "base2new/base" if role == "base" else "basic"
        return self.output / sub / METHODS[method] / dataset / self._leaf(method, seed)

    def eval_dir(self, dataset, seed, method="zip", role="xd") -> Path:
        if role == "new":
            return self.output / "base2new" / "new" / METHODS[method] / dataset / self._leaf(method, seed)
        return self.output / "xd" / "evaluation" / METHODS[method] / dataset / f"seed{seed}"

    # ------------------------------------------------------------------ data

    def check_data(self, skip_missing: bool = False) -> list[str]:
        """Before any job: every dataset the plan reads (ImageNet too, the source of cross-dataset and
        ood) must have its folder under --root. DatasetError listing every missing one, or with
        skip_missing drop the missing ones (logged) and return their keys; ImageNet as the source
        missing, or no dataset left, stays an error."""
        source = ["imagenet"] if self.protocol in ("cross-dataset", "ood") else []
        wanted = list(dict.fromkeys(source + self.datasets))
        missing = {d: Path(self.root) / get_spec(d).dataset_dir for d in wanted
                   if not (Path(self.root) / get_spec(d).dataset_dir).is_dir()}
        if not missing:
            return []
        listed = ", ".join(f"{get_spec(d).name} (looked for '{folder}')" for d, folder in missing.items())
        what = f"{len(missing)} of the {len(wanted)} datasets of {self.protocol} are missing under --root '{self.root}': {listed}"
        present = [d for d in dict.fromkeys(self.datasets) if d not in missing]  # --datasets names targets only
        if not skip_missing:
            have = f"--datasets {','.join(present)} (those present)" if present else \
                "--datasets with the ones you have (none of these is under this --root: check it)"
            raise DatasetError(f"{what}; pass {have} or --skip-missing to run only the present ones")
        if "imagenet" in missing and source:
            raise DatasetError(f"{what}; {self.protocol} trains every prompt on ImageNet, which --skip-missing "
                               f"cannot skip: put ImageNet in '{missing['imagenet']}'")
        if not present:
            raise DatasetError(f"{what}: --skip-missing leaves nothing to run; check --root (the folder holding the "
                               f"datasets, $DATA)")
        log.warning("--skip-missing: skipping %s", listed)
        self.datasets = [d for d in self.datasets if d not in missing]
        return list(missing)

    # ------------------------------------------------------------------ jobs

    def _argv(self, method, dataset, seed, out, subsample="all", eval_only=False, model_dir=None, train=True):
        argv = ["--root", self.root, "--seed", str(seed), "--trainer", METHODS[method], "--output-dir", str(out)]
        if self.config_for(method):
            argv += ["--config-file", self.config_for(method)]
        if model_dir is not None:
            argv += ["--model-dir", str(model_dir), "--load-epoch", "1000"]
        if eval_only:
            argv += ["--eval-only"]
        if train and self.eval_every and method != "zsclip":
            argv += ["--eval-every", str(self.eval_every)]
        argv += ["--no-progress", *self.flags, *self.method_flags.get(method, ())]
        paper = paper_opts(method) if method not in ZIP_SIDE and not self.config_for(method) else []
        return argv + ["DATASET.NAME", get_spec(dataset).name, "DATASET.SUBSAMPLE_CLASSES", subsample,
                       "DATASET.NUM_SHOTS", str(self.shots), *paper, *self.opts]

    def _job(self, method, dataset, seed, out, role, **kw) -> Job:
        return Job(self._argv(method, dataset, seed, out, **kw), str(out),
                   {"method": method, "dataset": dataset, "seed": seed, "role": role})

    def stages(self) -> list[list[Job]]:
        p, jobs1, jobs2 = self.protocol, [], []
        zs_seed = self.seeds[0]
        for method in self.methods:
            seeds = [zs_seed] if method == "zsclip" else self.seeds
            if p == "few-shot":
                for d in self.datasets:
                    for s in seeds:
                        jobs1.append(self._job(method, d, s, self.train_dir(d, s, method=method), "train",
                                               eval_only=method == "zsclip"))
            elif p == "base2new":
                for d in self.datasets:
                    for s in seeds:
                        if method == "zsclip":
                            for part in ("base", "new"):
                                out = self.output / "base2new" / part / "zsclip" / d
                                jobs1.append(self._job(method, d, s, out, part, subsample=part, eval_only=True))
                            continue
                        base = self.train_dir(d, s, role="base", method=method)
                        jobs1.append(self._job(method, d, s, base, "base", subsample="base"))
                        jobs2.append(self._job(method, d, s, self.eval_dir(d, s, method, role="new"), "new",
                                               subsample="new", eval_only=True, model_dir=base, train=False))
            else:  # cross-dataset / ood: an ImageNet prompt evaluated elsewhere
                for s in seeds:
                    if method == "zsclip":
                        for d in ["imagenet", *self.datasets]:
                            out = self.output / "xd" / "zsclip" / d
                            jobs1.append(self._job(method, d, s, out, "eval", eval_only=True))
                        continue
                    src = self.train_dir("imagenet", s, method=method)
                    jobs1.append(self._job(method, "imagenet", s, src, "train"))
                    for d in self.datasets:
                        jobs2.append(self._job(method, d, s, self.eval_dir(d, s, method), "eval", eval_only=True,
                                               model_dir=src, train=False))
        return [j for j in (jobs1, jobs2) if j]

    # ------------------------------------------------------------------ tables and plots

    def _acc(self, method, dataset, seed, role):
        if method == "zsclip":
            folder = {"train": self.train_dir(dataset, seed, method="zsclip"),
                      "base": self.output / "base2new" / "base" / "zsclip" / dataset,
                      "new": self.output / "base2new" / "new" / "zsclip" / dataset,
                      "eval": self.output / "xd" / "zsclip" / dataset}[role]
            return [read_accuracy(folder)]
        folder = {"train": lambda s: self.train_dir(dataset, s, method=method),
                  "base": lambda s: self.train_dir(dataset, s, "base", method),
                  "new": lambda s: self.eval_dir(dataset, s, method, role="new"),
                  "eval": lambda s: self.eval_dir(dataset, s, method)}[role]
        return [read_accuracy(folder(s)) for s in self.seeds]

    def tables(self) -> list[Table]:
        p = self.protocol
        if p == "base2new":
            t = Table("Base-to-new generalisation (accuracy %, mean ± std over seeds; H = harmonic mean)",
                      ["Dataset"] + [f"{METHODS[m]} {c}" for m in self.methods for c in ("Base", "New", "H")])
            avg = {m: [] for m in self.methods}
            for d in self.datasets:
                row = [get_spec(d).name]
                for m in self.methods:
                    b, n = mean_std(self._acc(m, d, 1, "base")), mean_std(self._acc(m, d, 1, "new"))
                    avg[m].append((b, n))
                    row += [b, n, None if b is None or n is None else Stat(harmonic(b.mean, n.mean))]
                t.add(row)
            row = ["Average"]
            for m in self.methods:
                bs, ns = average_row([x[0] for x in avg[m]]), average_row([x[1] for x in avg[m]])
                row += [bs, ns, None if bs is None or ns is None else Stat(harmonic(bs.mean, ns.mean))]
            t.add(row)
            return [t]
        if p == "few-shot":
            title, cols, role = f"Few-shot accuracy ({self.shots} shots; %, mean ± std over seeds)", self.datasets, "train"
        else:
            title = ("Cross-dataset transfer from ImageNet" if p == "cross-dataset" else
                     "Out-of-distribution generalisation from ImageNet") + " (accuracy %, mean ± std over seeds)"
            cols, role = self.datasets, "eval"
        header = ["Method"] + (["ImageNet"] if p != "few-shot" else []) + [get_spec(d).name for d in cols] + ["Average"]
        t = Table(title, header)
        for m in self.methods:
            row = [METHODS[m]]
            if p != "few-shot":
                row.append(mean_std(self._acc(m, "imagenet", 1, "eval" if m == "zsclip" else "train")))
            cells = [mean_std(self._acc(m, d, 1, role)) for d in cols]
            t.add(row + cells + [average_row(cells)])
        return [t]

    def _plotted(self) -> list[str]:
        """The datasets whose training runs the plots show (ImageNet, the source, for cross-dataset and ood)."""
        return self.datasets if self.protocol in ("few-shot", "base2new") else ["imagenet"]

    def curves(self) -> dict:
        """{dataset: {TRAINER: [curve per seed]}} of the trained methods' --eval-every curves."""
        folder = "base" if self.protocol == "base2new" else "basic"
        return {d: {METHODS[m]: [curve_points(self.train_dir(d, s, folder, m)) for s in self.seeds]
                    for m in self.methods if m != "zsclip"} for d in self._plotted()}

    def zero_shot(self) -> dict:
        """{dataset: {ZeroshotCLIP: accuracy}} on the test split of the curves (base2new: the base
        classes), when zsclip ran: the plots' dashed line, as compare draws zero-shot."""
        if "zsclip" not in self.methods:
            return {}
        role = {"few-shot": "train", "base2new": "base"}.get(self.protocol, "eval")  # _acc's name for that run
        accs = {d: mean_std(self._acc("zsclip", d, 1, role)) for d in self._plotted()}
        return {d: {METHODS["zsclip"]: a.mean} for d, a in accs.items() if a is not None}

    def report(self) -> dict:
        tables = [t.write(self.output / "tables", self.protocol) for t in self.tables()]
        plot = plot_curves(self.curves(), self.output / "plots" / f"{self.protocol}.png",
                           f"{self.protocol}: test accuracy vs queries", self.zero_shot())
        return {"tables": [str(p) for pair in tables for p in pair], "plot": str(plot) if plot else None}


def run_protocol(plan: Plan, entry, ray: str | None = None, cpus_per_job: float = 1, gpus_per_job: float = 0,
                 progress: bool = True, skip_missing: bool = False, announce=None, group_size: int = 32,
                 parser=None) -> dict:
    """Check the datasets (Plan.check_data), then run (or skip) every job of the plan through entry (the
    CLI's main), each job's output going to its log.txt; then write its tables and plot. ray: the --ray
    value (sweep.RayRunner: one job per task), None to run the jobs in this process: with parser (the
    CLI's, which reads each job's settings) and group_size > 1, the training jobs that share a task in
    run groups of at most group_size (grouped.GroupedRunner), else one after another. announce(stages):
    called once the datasets are checked and the runner stands, before any job (the CLI says what the
    plan will run)."""
    from zipfast.paper.grouped import GroupedRunner

    skipped = plan.check_data(skip_missing)
    if ray:
        runner = RayRunner(entry, ray, cpus_per_job, gpus_per_job)
    else:
        runner = GroupedRunner(entry, parser, group_size) if parser is not None and group_size > 1 else LocalRunner(entry)
    if announce is not None:  # once the runner stands: a refused --ray stays the only line
        announce(plan.stages())
    summary = run_stages(plan.stages(), runner, progress)
    summary.update(plan.report(), runner=runner.name, skipped_datasets=skipped)
    return summary
