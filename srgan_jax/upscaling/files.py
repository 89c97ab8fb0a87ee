"""Image files in and out of `srgan-jax upscale`: output planning, writing, the command itself."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from srgan_jax import host_memory
from srgan_jax.data.images import DECODE_ERRORS, IMAGE_SUFFIXES, find_images, read_image
from srgan_jax.errors import UserError
from srgan_jax.upscaling import engine

_EXIF_ORIENTATION = 0x0112

# --format value -> (PIL format, file suffix)
FORMATS = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg"),
           "webp": ("WEBP", ".webp"), "bmp": ("BMP", ".bmp"), "tiff": ("TIFF", ".tif"), "tif": ("TIFF", ".tif")}


def write_image(path: Path, sr: np.ndarray, *, gray: bool, file_format: str, icc_profile: bytes | None) -> None:
    """Save uint8 RGB(A) SR as `file_format`; gray inputs are saved gray (PIL's luma of the RGB).

    JPEG has no alpha: it is dropped. JPEG and WebP are written at quality 95. Written to
    `partial_path(path)` first and renamed, so `path` is never a truncated file; the partial
    file is removed if the write fails or is interrupted (Ctrl-C).
    """
    image = Image.fromarray(sr)
    if gray:
        image = image.convert("LA" if sr.shape[-1] == 4 else "L")
    if file_format == "JPEG" and image.mode in ("LA", "RGBA"):
        image = image.convert(image.mode[:-1])
    elif file_format in ("BMP", "WEBP") and image.mode == "LA":
        image = image.convert("RGBA")
    options = {"quality": 95} if file_format in ("JPEG", "WEBP") else {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    partial = partial_path(path)
    try:
        image.save(partial, format=file_format, **options)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def partial_path(path: Path) -> Path:
    """`NAME.part` beside `path`: where `write_image` writes before renaming into place.

    One found before writing was left by a run killed mid-write (kill -9, power loss)."""
    return path.with_name(path.name + ".part")


def read_size(path: Path) -> tuple[int, int, bool]:
    """(height, width, has alpha) of an image file, upright, from its header: no pixels decoded.

    Raises one of DECODE_ERRORS for a file that is not an image (PIL's decompression-bomb
    error for a header past 2 x Image.MAX_IMAGE_PIXELS, 179 MP, included).
    """
    with Image.open(path) as image:
        width, height = image.size
        alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
        # Only an orientation already in the header: PNG's getexif() would decode the pixels.
        rotated = "exif" in image.info and image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
    return (width, height, alpha) if rotated else (height, width, alpha)


def _duration(seconds: float) -> str:
    """'under 1 s', 'about 12 s', 'about 3 min', 'about 2 h 5 min'."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


def _bytes(count: float) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.{0 if count >= 1e7 else 1}f} MB"


def _megapixels(value: float) -> str:
    return f"{value:,.{0 if value >= 10 else 1}f} MP"


def describe(estimate: engine.Estimate) -> str:
    """'w x h -> W x H (N MP, B as uint8), ~M GiB peak memory, about T on C CPU cores'."""
    e = estimate
    text = (f"{e.width // e.scale}x{e.height // e.scale} -> {e.width}x{e.height} ({_megapixels(e.megapixels)}, "
            f"{_bytes(e.output_bytes)} as uint8), ~{e.peak_bytes / 2**30:.1f} GiB peak memory")
    if e.seconds is not None:
        text += f", {_duration(e.seconds)} on {engine.cpu_cores()} CPU cores"
    return text


def _format_for(suffix: str) -> str | None:
    return Image.registered_extensions().get(suffix.lower())


def _without_earlier_outputs(found: list[Path], scale: int) -> list[Path]:
    """`found` less this command's outputs of other files in it, for a folder written into itself.

    An output is `<stem>_x<scale>.<any suffix>` beside a `<stem>.<suffix>` (any suffix: --format
    may differ between runs), so a rerun neither upscales earlier outputs again nor refuses
    them as inputs it would overwrite; a file such as `photo_x4.png` with no `photo.*` beside
    it is still an input.
    """
    stems = {(p.parent, p.stem) for p in found}
    tag = f"_x{scale}"
    return [p for p in found if not (p.stem.endswith(tag) and (p.parent, p.stem[:-len(tag)]) in stems)]


def _collect_inputs(inputs: Sequence[str | Path], output: Path, scale: int
                    ) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image file, its path relative to the input it came from) per image found, and one line
    per input that is missing or an empty folder."""
    files, errors = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = find_images(path)
            if output.resolve() == path.resolve():
                found = _without_earlier_outputs(found, scale)
            else:
                # An output folder inside the input folder holds earlier outputs: not inputs.
                found = [p for p in found if output.resolve() not in p.resolve().parents]
            if not found:
                errors.append(f"{path}: no images ({' '.join(IMAGE_SUFFIXES)}) in this folder")
            files += [(p, p.relative_to(path)) for p in found]
        elif path.is_file():
            files.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder; skipped")
    return files, errors


def plan_outputs(inputs: Sequence[str | Path], output: str | Path, format_name: str | None, scale: int
                 ) -> tuple[list[tuple[Path, Path, str]], list[str]]:
    """Pair every input image with its output path and PIL format.

    Inputs are files or folders (searched recursively for IMAGE_SUFFIXES; earlier outputs in
    the output folder are not inputs, see `_without_earlier_outputs`). `output` is a file when
    one input file is given and its suffix is one PIL writes; otherwise a folder that
    mirrors the inputs' relative paths as `<stem>_x<scale><suffix>`. The suffix and format
    are the input's, or `format_name`'s (a FORMATS key) when given.

    Returns:
      (jobs, errors): (input, output, PIL format) per image; one line per input that is
      missing, an empty folder, or whose output would overwrite an input or another output.
    """
    output = Path(output)
    if format_name is not None:
        format_name = format_name.lower()
        if format_name not in FORMATS:
            raise UserError(f"--format {format_name} is not one of {', '.join(FORMATS)}")
    # Any suffix PIL writes (.gif too) names a file, not a folder to create.
    names_file = _format_for(output.suffix) is not None and not output.is_dir()
    to_file = len(inputs) == 1 and Path(inputs[0]).is_file() and names_file
    if not to_file and names_file:
        raise UserError(f"-o {output} names a file but the inputs are several images or a folder: "
                        "pass an output folder")
    if to_file and format_name and _format_for(output.suffix) != FORMATS[format_name][0]:
        raise UserError(f"--format {format_name} does not match -o {output}: drop --format or rename the file")
    files, errors = _collect_inputs(inputs, output, scale)
    sources = {p.resolve() for p, _ in files}
    jobs, taken = [], {}
    for path, relative in files:
        if to_file:
            target = output
        else:
            suffix = FORMATS[format_name][1] if format_name else path.suffix
            target = output / relative.parent / f"{relative.stem}_x{scale}{suffix}"
        file_format = FORMATS[format_name][0] if format_name else _format_for(target.suffix)
        if target.resolve() in sources:
            errors.append(f"{path}: the output {target} would overwrite an input file; skipped (choose another -o)")
        elif target.resolve() in taken:
            errors.append(f"{path}: its output {target} is also the output of {taken[target.resolve()]}; skipped")
        elif file_format is None:
            errors.append(f"{path}: no image format for the suffix of {target}; skipped (pass --format png)")
        else:
            taken[target.resolve()] = path
            jobs.append((path, target, file_format))
    return jobs, errors


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _estimate_jobs(upscaler: engine.Upscaler, jobs: list[tuple[Path, Path, str]], limit: float
                   ) -> tuple[list[tuple[Path, Path, str, engine.Estimate]], list[str]]:
    """Each job's `Estimate` from its file header; one line per unreadable or too large input."""
    kept, errors = [], []
    for source, target, file_format in jobs:
        try:
            h, w, alpha = read_size(source)
        except DECODE_ERRORS as err:
            errors.append(f"{source}: unreadable image ({err}); skipped")
            continue
        estimate = upscaler.estimate(h, w, alpha)
        if estimate.megapixels > limit:
            errors.append(f"{source}: {describe(estimate)} is over --max-output-megapixels {limit:g}; "
                          "skipped (raise --max-output-megapixels to upscale it)")
        else:
            kept.append((source, target, file_format, estimate))
    return kept, errors


def _announce(jobs: list[tuple[Path, Path, str, engine.Estimate]]) -> None:
    """One line before the work: the output, peak memory and time, and a warning if memory is short."""
    estimates = [estimate for *_, estimate in jobs]
    largest = max(estimates, key=lambda e: e.peak_bytes)
    if len(jobs) == 1:
        print(f"upscale: {jobs[0][0]}: {describe(largest)} (approximate)", file=sys.stderr)
    else:
        total = sum(e.megapixels for e in estimates)
        line = f"upscale: {len(jobs)} images, {_megapixels(total)} out in all; largest {describe(largest)}"
        if all(e.seconds is not None for e in estimates):
            line += f"; {_duration(sum(e.seconds for e in estimates))} in all"
        print(line + " (approximate)", file=sys.stderr)
    available = host_memory.available_bytes()
    if available is not None and largest.peak_bytes > available:
        print(f"upscale: warning: about {largest.peak_bytes / 2**30:.1f} GiB may be needed, "
              f"{available / 2**30:.1f} GiB are available", file=sys.stderr)


def upscale_files(inputs: Sequence[str | Path], output: str | Path, *, checkpoint: str | Path | None = None,
                  tile: int = 128, overlap: int = 16, batch: int = 4, dtype: str = "float32",
                  format_name: str | None = None, max_output_megapixels: float = 200.0,
                  skip_existing: bool = False) -> dict[str, int]:
    """`srgan-jax upscale`: write the SR of every input image, print each output path.

    `checkpoint`, `tile`, `overlap`, `batch`, `dtype` as `engine.load_generator` takes them; the
    scale is the checkpoint's. `inputs`, `output`, `format_name` as `plan_outputs` takes them.
    Before any pixel is decoded, each input's header gives the output size, memory and time
    (`Upscaler.estimate`); inputs whose output is over `max_output_megapixels` are refused.
    With `skip_existing`, inputs whose output exists are skipped (outputs appear only
    complete, see `write_image`), so a rerun resumes. Problems with single files (missing,
    unreadable, too large, would overwrite an input) are one line each on stderr and do not
    stop the others; the last line counts what was written, skipped and failed. Progress bars
    (over images, and over tiles for an image that needs several forward passes) appear on a
    terminal only. Returns those counts: {"written", "skipped", "failed"}.
    """
    upscaler = engine.load_generator(checkpoint, tile=tile, overlap=overlap, batch=batch, dtype=dtype)
    jobs, errors = plan_outputs(inputs, output, format_name, upscaler.scale)
    done = {target for _, target, _ in jobs if skip_existing and target.is_file()}
    for target in sorted(done):
        if _remove_stale_partial(target):
            print(f"{partial_path(target)}: left by an interrupted run; removed", file=sys.stderr)
    with warnings.catch_warnings():
        # PIL warns past 89 MP of input; --max-output-megapixels is the limit here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        planned, refused = _estimate_jobs(upscaler, [job for job in jobs if job[1] not in done],
                                          max_output_megapixels)
        errors += refused
        for line in errors:
            print(line, file=sys.stderr)
        if not planned and not done:
            if errors:
                raise UserError("nothing was upscaled: every input was skipped (see above)")
            raise UserError("no images to upscale: pass image files or folders of images")
        if planned:
            _announce(planned)
        counts = {"written": 0, "skipped": len(done), "failed": len(errors)}
        try:
            _upscale_all(upscaler, planned, counts)
        except KeyboardInterrupt:
            print(f"{_summary(counts)}; interrupted: rerun with --skip-existing to go on", file=sys.stderr)
            raise
    print(_summary(counts), file=sys.stderr)
    return counts


def _summary(counts: dict[str, int]) -> str:
    text = f"upscale: {counts['written']} written"
    if counts["skipped"]:
        text += f", {counts['skipped']} skipped (output already there, --skip-existing)"
    if counts["failed"]:
        text += f", {counts['failed']} failed (see above)"
    return text


def _remove_stale_partial(target: Path) -> bool:
    """Delete a `partial_path(target)` left by a killed run; True if there was one."""
    partial = partial_path(target)
    if not partial.is_file():
        return False
    partial.unlink()
    return True


def _upscale_all(upscaler: engine.Upscaler, jobs: list[tuple[Path, Path, str, engine.Estimate]],
                 counts: dict[str, int]) -> None:
    """Upscale and write every job, counting into counts["written"] and counts["failed"]."""
    from tqdm import tqdm

    terminal = _stderr_is_terminal()
    for source, target, file_format, _ in tqdm(jobs, unit="image", disable=len(jobs) < 2 or not terminal,
                                               dynamic_ncols=True):
        try:
            picture = read_image(source)
        except DECODE_ERRORS as err:
            tqdm.write(f"{source}: unreadable image ({err}); skipped", file=sys.stderr)
            counts["failed"] += 1
            continue
        tile_count = upscaler.tile_count(*picture.pixels.shape[:2])
        with tqdm(total=tile_count, unit="tile", desc=source.name, leave=len(jobs) == 1,
                  disable=tile_count <= upscaler.batch or not terminal, dynamic_ncols=True) as tiles:
            sr = upscaler(picture.pixels, progress=tiles.update)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if _remove_stale_partial(target):
                tqdm.write(f"{partial_path(target)}: left by an interrupted run; replaced", file=sys.stderr)
            write_image(target, sr, gray=picture.pixels.shape[-1] < 3, file_format=file_format,
                        icc_profile=picture.icc_profile)
        except OSError as err:
            tqdm.write(f"{target}: cannot write ({err}); skipped", file=sys.stderr)
            counts["failed"] += 1
            continue
        counts["written"] += 1
        tqdm.write(str(target))
