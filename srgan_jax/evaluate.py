"""Set5 / Set14 / BSD100 evaluation tables (the paper protocol of SPEC.md) at the model's scale s.

The scale comes from the checkpoint(s) (x4 in the paper); the baselines run at the same s, and
alone (`method`) at `scale` (default `BASELINE_SCALE`). Layout of `data_dir`: `<Set>/` holds the
HR images, `<Set>_LR_x<s>/` (optional) the shipped LR inputs under the same file names. HR
images are mod-cropped to a multiple of s (top-left kept) and converted to RGB; LR is either
the shipped file or MATLAB bicubic / s of the HR (`imresize`). Every upscaler maps uint8
[h, w, 3] RGB LR to uint8 [s*h, s*w, 3] SR, scored with `metrics.psnr` / `metrics.ssim` and, on
request, the no-reference `niqe.niqe` (all on the Y channel with an s-px border crop; NIQE of
the HR images is the reference point) and the full-reference LPIPS (`networks.lpips`, v0.1
AlexNet: full RGB mapped to [-1, 1], the same s-px border crop as PSNR so that both see the
same pixels; lower = closer to HR, 0 for HR itself, so HR gets no LPIPS row).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from srgan_jax import metrics, niqe
from srgan_jax.data.images import DECODE_ERRORS, IMAGE_SUFFIXES, mod_crop, read_rgb
from srgan_jax.data.imresize import imresize, upscale_nearest
from srgan_jax.errors import UserError

Upscaler = Callable[[np.ndarray], np.ndarray]
PairMetric = Callable[[np.ndarray, np.ndarray], float]  # (sr, hr) uint8 [H, W, 3] RGB -> distance
ImagePair = tuple[str, np.ndarray, np.ndarray]  # (name, lr uint8 [h, w, 3], hr uint8 [H, W, 3])


def lr_dir_name(set_name: str, scale: int) -> str:
    """Folder of the shipped LR references of a set at x`scale`, e.g. 'Set5_LR_x4'."""
    return f"{set_name}_LR_x{scale}"


def resolve_lr_source(data_dir: str | Path, set_name: str, scale: int, lr_source: str = "auto") -> str:
    """'shipped' or 'make': 'auto' picks 'shipped' when `<Set>_LR_x<scale>/` exists."""
    if lr_source not in ("auto", "shipped", "make"):
        raise ValueError(f"lr_source must be auto, shipped or make, got {lr_source!r}")
    if lr_source != "auto":
        return lr_source
    return "shipped" if (Path(data_dir) / lr_dir_name(set_name, scale)).is_dir() else "make"


def load_image_pairs(
    data_dir: str | Path, set_name: str, scale: int, lr_source: str = "auto"
) -> tuple[list[ImagePair], list[str]]:
    """Read one benchmark set as (name, lr, hr) uint8 RGB pairs, sorted by file name.

    HR is mod-cropped to a multiple of `scale`; LR is `<Set>_LR_x<scale>/<same file>`
    ('shipped') or `imresize(hr, 1 / scale)` ('make'); 'auto' = shipped where that folder
    exists. Problems do not stop the set: each unreadable image or LR/HR size mismatch
    becomes one line in `errors` (naming the file) and that image is skipped; a missing
    or empty set folder gives one line and no pairs.

    Returns:
      (pairs, errors): pairs of (file stem, lr [H/scale, W/scale, 3], hr [H, W, 3]).
    """
    data_dir = Path(data_dir)
    set_dir = data_dir / set_name
    if not set_dir.is_dir():
        return [], [f"{set_dir}: set folder not found; check --data-dir and --sets"]
    files = sorted(p for p in set_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return [], [f"{set_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in the set folder"]
    source = resolve_lr_source(data_dir, set_name, scale, lr_source)
    lr_dir = data_dir / lr_dir_name(set_name, scale)
    if source == "shipped" and not lr_dir.is_dir():
        return [], [f"{lr_dir}: LR folder not found; use --lr-source make to downscale the HR images"]

    pairs, errors = [], []
    for hr_path in files:
        try:
            hr = read_rgb(hr_path)
        except DECODE_ERRORS as err:
            errors.append(f"{hr_path}: unreadable image ({err}); skipped")
            continue
        if min(hr.shape[:2]) < scale:
            errors.append(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} smaller than the scale {scale}; skipped")
            continue
        hr = mod_crop(hr, scale)
        h, w = hr.shape[:2]
        if source == "make":
            lr = imresize(hr, scale=1.0 / scale)
        else:
            lr_path = lr_dir / hr_path.name
            try:
                lr = read_rgb(lr_path)
            except FileNotFoundError:
                errors.append(f"{lr_path}: LR image missing for {hr_path.name}; skipped")
                continue
            except DECODE_ERRORS as err:
                errors.append(f"{lr_path}: unreadable image ({err}); skipped")
                continue
            if lr.shape[:2] != (h // scale, w // scale):
                errors.append(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]} but HR {hr_path.name} is {w}x{h} "
                    f"(expected {w // scale}x{h // scale}); skipped"
                )
                continue
        pairs.append((hr_path.stem, lr, hr))
    return pairs, errors


def lpips_scorer(weights: str | Path) -> PairMetric:
    """LPIPS v0.1 (AlexNet) with the converted weights at `weights` (`srgan-jax convert-lpips`):
    (sr, hr) uint8 [H, W, 3] RGB, whole images as given (crop first) -> LPIPS as a float.

    Jitted once per image shape (BSD100 has two); SR and HR go through AlexNet as one batch.
    """
    import jax.numpy as jnp

    from srgan_jax import lpips_weights, xla_cpu

    def distance(lpips, sr, hr):  # uint8 [1, H, W, 3] each
        return lpips(sr.astype(jnp.float32) / 127.5 - 1.0, hr.astype(jnp.float32) / 127.5 - 1.0)[0]

    jitted, lpips = xla_cpu.jit(distance), lpips_weights.load_lpips(weights)
    return lambda sr, hr: float(jitted(lpips, sr[None], hr[None]))


def _score(sr: np.ndarray, hr: np.ndarray, metric_names: Sequence[str], scale: int,
           lpips_fn: PairMetric | None) -> dict[str, float]:
    """The requested metrics of one SR image: PSNR/SSIM against HR, NIQE of SR alone (all Y),
    LPIPS against HR (RGB); all with a `scale`-px border crop."""
    crop = (slice(scale, -scale),) * 2 if scale else (slice(None),) * 2
    score_fns = {
        "psnr": lambda: metrics.psnr(sr, hr, crop_border=scale),
        "ssim": lambda: metrics.ssim(sr, hr, crop_border=scale),
        "niqe": lambda: niqe.niqe(sr, crop_border=scale),
        "lpips": lambda: lpips_fn(sr[crop], hr[crop]),
    }
    scores = {}
    for metric in metric_names:
        try:
            scores[metric] = score_fns[metric]()
        except ValueError as err:  # NIQE needs one 96x96 block after the crop, LPIPS 31x31 pixels
            raise UserError(f"{err}: drop {metric} from --metrics for this set") from None
    return scores


def evaluate_set(upscale_fn: Upscaler | None, pairs: list[ImagePair], scale: int,
                 metric_names: Sequence[str] = ("psnr", "ssim"), progress: str | None = None,
                 lpips_fn: PairMetric | None = None) -> dict:
    """Score an upscaler on (name, lr, hr) pairs with the paper protocol.

    Args:
      upscale_fn: uint8 [h, w, 3] RGB LR -> uint8 [H, W, 3] RGB SR (float in [0, 1] is also
        accepted: clipped and rounded to 8 bits before scoring). None scores the HR images
        themselves: the reference point of the no-reference NIQE (only "niqe" is meaningful).
      pairs: from `load_image_pairs` at the same `scale`.
      scale: the upscaling factor: SR must be `scale` x LR; also the border crop in pixels.
      metric_names: any of METRICS. PSNR (dB) and SSIM compare with HR; NIQE (lower is more
        natural) scores the SR image alone; all three on the Y channel. LPIPS (lower is closer)
        compares with HR in RGB. All with a `scale`-px border crop.
      progress: a label for a progress bar on stderr (shown on a terminal only); None: no bar.
      lpips_fn: the LPIPS of (sr, hr) (`lpips_scorer`); needed when metric_names has "lpips".

    Returns:
      {metric: mean over the images, "n": count, "per_image": {name: {metric: value}}}.
    """
    if not pairs:
        raise ValueError("evaluate_set: no image pairs to evaluate")
    if not set(metric_names) <= set(METRICS):
        raise ValueError(f"evaluate_set: metrics must be among {METRICS}, got {metric_names}")
    if "lpips" in metric_names and lpips_fn is None:
        raise ValueError("evaluate_set: lpips needs lpips_fn (see lpips_scorer)")
    per_image = {}
    bar = tqdm(pairs, desc=progress, unit="image", file=sys.stderr, leave=False,
               disable=None if progress else True)  # None: only on a terminal
    for name, lr, hr in bar:
        sr = hr if upscale_fn is None else np.asarray(upscale_fn(lr))
        if sr.shape != hr.shape:
            raise UserError(f"{name}: upscaler gave {sr.shape} for HR {hr.shape}; it must upscale x{scale} to RGB")
        try:
            per_image[name] = _score(sr, hr, metric_names, scale, lpips_fn)
        except UserError as err:
            raise UserError(f"{name}: {err}") from None
    means = {metric: float(np.mean([v[metric] for v in per_image.values()])) for metric in metric_names}
    return {**means, "n": len(per_image), "per_image": per_image}


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(lr, scale, 'bicubic')` on uint8 (rounded per axis), the bicubic baseline."""
    return imresize(lr, scale=scale)


def nearest_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour x`scale` (pixel replication), the NN baseline."""
    return upscale_nearest(lr, scale)


def baselines(scale: int) -> dict[str, Upscaler]:
    """The paper's baselines at x`scale`: {"nearest": ..., "bicubic": ...}, uint8 LR -> uint8 SR."""
    return {"nearest": functools.partial(nearest_upscale, scale=scale),
            "bicubic": functools.partial(bicubic_upscale, scale=scale)}


BASELINE_NAMES = ("nearest", "bicubic")
BASELINE_SCALE = 4  # a baseline scored alone (no model to take the scale from): the paper's x4
METRICS = ("psnr", "ssim", "niqe", "lpips")
HR_METHOD = "HR"  # the HR images scored as they are (NIQE only)


_COLUMNS = {"psnr": ("PSNR (dB)", "{:.2f}"), "ssim": ("SSIM", "{:.4f}"), "niqe": ("NIQE", "{:.3f}"),
            "lpips": ("LPIPS", "{:.4f}")}


def format_table(results: dict[str, dict[str, dict]], lr_source_used: dict[str, str],
                 metric_names: Sequence[str] = ("psnr", "ssim")) -> str:
    """Markdown table of {method: {set: evaluate_set result}}; `lr_source_used` = {set: source}.

    A metric a method was not scored on (PSNR/SSIM/LPIPS of the HR row) shows as "-".
    """
    lines = ["| method | set | " + " | ".join(_COLUMNS[m][0] for m in metric_names) + " | images | LR source |",
             "|---|---|" + "---:|" * len(metric_names) + "---:|---|"]
    for method, by_set in results.items():
        for set_name, r in by_set.items():
            cells = [_COLUMNS[m][1].format(r[m]) if m in r else "-" for m in metric_names]
            lines.append(f"| {method} | {set_name} | {' | '.join(cells)} | {r['n']} "
                         f"| {lr_source_used.get(set_name, '?')} |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_benchmarks` scored.

    Attributes:
      results: {method: {set: `evaluate_set` result}}.
      lr_source_used: {set: "shipped" or "make"}, for the sets that were scored.
      scale: the upscaling factor of every method (and the border crop of every metric).
      problems: one line per set or image that could not be scored (also printed on stderr).
    """

    results: dict[str, dict[str, dict]]
    lr_source_used: dict[str, str]
    scale: int
    problems: list[str]


def _methods(method: str | None, checkpoints: Sequence[str], scale: int | None) -> tuple[dict[str, Upscaler], int]:
    """The upscalers to score and their common scale: one baseline at `scale` (None:
    BASELINE_SCALE), or the model(s) plus both baselines at the models' scale.

    One checkpoint (or the shipped one) is named "model"; several are named by their paths.
    """
    if scale is not None and scale < 2:
        raise UserError(f"--scale {scale}: the upscaling factor must be 2 or more")
    if method is not None:
        if method not in BASELINE_NAMES:
            raise UserError(f"--method {method}: use one of {', '.join(BASELINE_NAMES)}")
        if checkpoints:
            raise UserError("--method scores a baseline and ignores --checkpoint; pass only one of them")
        scale = BASELINE_SCALE if scale is None else scale
        return {method: baselines(scale)[method]}, scale
    from srgan_jax.upscaling import engine  # JAX only when a model is scored

    paths = list(checkpoints) or [None]
    models = {"model" if len(paths) == 1 else str(path): engine.load_generator(path) for path in paths}
    found = engine.common_scale(list(models.items()), "evaluate")
    if scale is not None and scale != found:
        raise UserError(f"--scale {scale} contradicts the checkpoint's x{found}: drop --scale (a model's "
                        "scale comes from its checkpoint)")
    return {**models, **baselines(found)}, found


def _check_options(data_dir: str | Path | None, sets: Sequence[str], metric_names: Sequence[str],
                   plot: str | Path | None) -> tuple[Path, list[str]]:
    """UserError for a missing data folder, no sets, unknown metrics or a plot without its metrics;
    else (the data folder, the metric names without repeats)."""
    if not data_dir:
        raise UserError("no data folder: pass --data-dir <folder with Set5/, Set14/, BSD100/> or set SRGAN_DATA_DIR")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} not found; pass --data-dir <folder with Set5/, Set14/, ...>")
    if not sets:
        raise UserError("no sets given; pass --sets Set5,Set14,BSD100")
    names = list(dict.fromkeys(metric_names))
    if set(names) - set(METRICS) or not names:
        raise UserError(f"--metrics {','.join(metric_names)}: use any of {','.join(METRICS)}")
    if plot and ("psnr" not in names or not {"niqe", "lpips"} & set(names)):
        raise UserError("--plot draws PSNR against NIQE or LPIPS: pass --metrics psnr,ssim,niqe (or psnr,lpips)")
    return data_dir, names


def evaluate_benchmarks(data_dir: str | Path | None, sets: Sequence[str], *, method: str | None = None,
                        checkpoints: Sequence[str] = (), scale: int | None = None,
                        metric_names: Sequence[str] = ("psnr", "ssim"), lr_source: str = "auto",
                        lpips_weights: str | Path | None = None, plot: str | Path | None = None,
                        json_path: str | Path | None = None) -> Evaluation:
    """`srgan-jax evaluate`: score the methods on each set, print the table, write `plot` and `json_path`.

    Methods: `method` (a BASELINE_NAMES baseline, at `scale` or BASELINE_SCALE), else each of
    `checkpoints` (none: the shipped SRResNet x4) and both baselines, all at the checkpoints' one
    scale (UserError if they differ, or if `scale` is given and another). LR: `lr_source` (auto,
    shipped or make) at that scale. `metric_names`: any of METRICS; NIQE adds the HR row, LPIPS
    needs `lpips_weights` (a `srgan-jax convert-lpips` file). `plot`: the perception-distortion
    figure (PSNR against NIQE and/or LPIPS).
    JSON layout: one method, no NIQE -> {set: {<metric>, "n", "per_image"}}; otherwise
    {method (model, each checkpoint path, nearest, bicubic, HR): {set: {...}}}, "HR" (NIQE of the
    HR images) only with NIQE. A missing set or an unreadable image is one line on stderr and in
    `problems`; the others are still scored. UserError if nothing could be scored.
    """
    data_dir, wanted = _check_options(data_dir, sets, metric_names, plot)
    lpips_fn = None
    if "lpips" in wanted:
        if not lpips_weights:
            raise UserError(f"--metrics {','.join(metric_names)} includes lpips, which needs --lpips-weights FILE; "
                            "make the file with: srgan-jax convert-lpips --out alex_v0.1.msgpack "
                            "(see pretrained/README.md, LPIPS)")
        lpips_fn = lpips_scorer(lpips_weights)
    methods, scale = _methods(method, checkpoints, scale)
    if "niqe" in wanted:
        methods[HR_METHOD] = None  # the HR images themselves: NIQE's reference point
    results: dict[str, dict[str, dict]] = {name: {} for name in methods}
    lr_source_used, problems = {}, []
    for set_name in sets:
        pairs, errors = load_image_pairs(data_dir, set_name, scale, lr_source)
        for line in errors:
            print(line, file=sys.stderr)
        problems += errors
        if not pairs:
            continue
        lr_source_used[set_name] = resolve_lr_source(data_dir, set_name, scale, lr_source)
        for name, upscale_fn in methods.items():
            names = ["niqe"] if upscale_fn is None else wanted
            results[name][set_name] = evaluate_set(upscale_fn, pairs, scale, names, progress=f"{name} {set_name}",
                                                   lpips_fn=lpips_fn)
    if not lr_source_used:
        raise UserError(f"no images could be evaluated (see above); check --data-dir {data_dir} and --sets")
    print(format_table(results, lr_source_used, wanted))
    if plot:
        from srgan_jax import pd_plot

        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        pd_plot.render(results, reference=HR_METHOD).save(plot, format="PNG")
        print(f"wrote {plot}")
    if json_path:
        payload = results[method] if method is not None and HR_METHOD not in results else results
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    return Evaluation(results, lr_source_used, scale, problems)
