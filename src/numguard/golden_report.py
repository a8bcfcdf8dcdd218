"""HTML pages for golden cases: golden, candidate and difference heatmaps side by side.

Each case gets ``<folder>/<case>.html`` with its PNGs beside it (``-golden``,
``-candidate``, ``-diff`` against the golden, ``-live-diff`` against the live
nn.GroupNorm decode) and a line in ``<folder>/index.html``. Pages are written for
every case, passing or failing, and nothing removes them during a run, so the
images of a failing case are always there to look at.

The heatmaps show the largest absolute difference over the three channels on a
fixed log scale from 1e-7 to 1e-1 (image scale 0..1), so pages compare across
cases: black is below 1e-7 (or identical), white is 1e-1 or more.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

MARKER = ".numguard-golden-report"
LOG_MIN, LOG_MAX = -7.0, -1.0
# black -> purple -> red -> orange -> yellow -> white (an inferno-like ramp)
_RAMP = np.array([[0, 0, 0], [60, 15, 110], [180, 40, 75], [240, 110, 20],
                  [250, 210, 40], [255, 255, 255]], dtype=np.float64)


def prepare_folder(folder: Path) -> Path:
    """Create ``folder`` for this run's pages, clearing an earlier run's.

    Only a folder carrying the report marker is cleared, and only of the files a
    report writes, so pointing --golden-report at an unrelated folder loses nothing.
    """
    folder = Path(folder)
    if (folder / MARKER).is_file():
        for path in folder.iterdir():
            if path.is_file() and path.suffix in (".html", ".png", ".json"):
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("pages written by numguard's golden tier\n")
    return folder


def heatmap(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8: max over channels of |image - reference| on the log ramp."""
    diff = np.abs(np.nan_to_num(image, nan=np.inf).astype(np.float64)
                  - reference.astype(np.float64)).max(axis=2)
    with np.errstate(divide="ignore"):
        level = (np.log10(diff) - LOG_MIN) / (LOG_MAX - LOG_MIN)
    level = np.clip(np.nan_to_num(level, nan=1.0, neginf=0.0, posinf=1.0), 0.0, 1.0)
    return ramp(level)


def ramp(level: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along ``_RAMP``."""
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    rgb = [np.interp(level, stops, _RAMP[:, c]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def _save_png(path: Path, pixels: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG")
    return path.name


def write_case_page(folder: Path, result) -> Path:
    """Write ``result``'s page and images into ``folder``; refresh the index."""
    from numguard.golden import to_png8

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.case.id
    figures = []
    images = result.images
    if "golden" in images:
        figures.append(("golden", _save_png(folder / f"{stem}-golden.png",
                                            to_png8(images["golden"]))))
    if "candidate" in images:
        figures.append((f"candidate ({result.candidate})",
                        _save_png(folder / f"{stem}-candidate.png",
                                  to_png8(images["candidate"]))))
    heatmaps = (("golden", "diff", "|candidate - golden|"),
                ("live", "live-diff", "|candidate - live nn.GroupNorm|"))
    for reference, suffix, title in heatmaps:
        if reference in images and "candidate" in images:
            pixels = heatmap(images[reference], images["candidate"])
            figures.append((title, _save_png(folder / f"{stem}-{suffix}.png", pixels)))
    legend = _save_png(folder / "heatmap-scale.png",
                       np.repeat(ramp(np.linspace(0, 1, 256))[None], 12, axis=0))
    page = folder / f"{stem}.html"
    page.write_text(render_page(result, figures, legend))
    entry = json.dumps(_index_entry(result, page.name))
    (folder / f"{stem}.json").write_text(entry + "\n")
    write_index(folder)
    return page


def _fmt_db(value: float) -> str:
    return "identical (inf)" if math.isinf(value) else f"{value:.2f} dB"


def _comparison_rows(result) -> list[str]:
    rows = []
    for label, c in (("stored golden", result.drift),
                     ("live nn.GroupNorm", result.kernel)):
        if c is None:
            rows.append(f"<tr><td>{label}</td><td colspan=6>not compared</td></tr>")
            continue
        m, t = c.metrics, c.threshold
        verdict = "pass" if c.passed else "FAIL"
        psnr_rule = f"&ge; {t.psnr_db:g} dB" if t else "-"
        ssim_rule = f"&ge; {t.ssim:g}" if t else "-"
        rows.append(
            f"<tr class={verdict.lower()}><td>{html.escape(c.reference)}</td>"
            f"<td>{_fmt_db(m.psnr_db)}</td><td>{psnr_rule}</td>"
            f"<td>{m.ssim:.7f}</td><td>{ssim_rule}</td>"
            f"<td>{m.max_abs:.3g} / {m.nan_count}</td><td>{verdict}</td></tr>"
        )
    return rows


def render_page(result, figures: list[tuple[str, str]], legend: str) -> str:
    status = "PASSED" if result.passed else "FAILED"
    case = result.case
    problems = result.problems + ([result.golden_error] if result.golden_error else [])
    details = [
        ("model", case.model), ("resolution", f"{case.resolution}x{case.resolution}"),
        ("dtype", case.dtype), ("seed", str(case.seed)),
        ("candidate", result.candidate),
        ("device", f"{result.device} (arch {result.arch})"),
        ("golden from", f"{result.golden_arch} ({result.golden_source})"
         if result.golden_arch else "-"),
    ]
    rows = "".join(f"<tr><th>{key}</th><td>{html.escape(value)}</td></tr>"
                   for key, value in details)
    figs = "\n".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(title)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, src in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{status} {html.escape(case.id)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.status {{ font-weight: bold; color: {'#1a7f37' if result.passed else '#cf222e'}; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }}
figure img {{ width: 384px; image-rendering: pixelated; border: 1px solid #888; }}
figcaption {{ text-align: center; font-size: 90%; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
tr.fail td {{ background: #ffebe9; }}
pre {{ background: #f6f8fa; padding: 0.6em; white-space: pre-wrap; }}
</style></head><body>
<h1><span class="status">{status}</span> {html.escape(case.id)}</h1>
<table>{rows}</table>
{''.join(f'<pre>{html.escape(p)}</pre>' for p in problems)}
<table><tr><th>compared with</th><th>PSNR</th><th>required</th><th>SSIM</th>
<th>required</th><th>max |diff| / NaN</th><th>verdict</th></tr>
{''.join(_comparison_rows(result))}</table>
<div class="figures">
{figs}
</div>
<p>Heatmap scale (largest channel difference, image scale 0..1):
1e-7 <img src="{legend}" alt="heatmap scale" style="width:256px;height:12px"> 1e-1</p>
<p><a href="index.html">all golden cases</a></p>
</body></html>
"""


def _index_entry(result, page: str) -> dict:
    def psnr(c):
        return None if c is None else (
            "inf" if math.isinf(c.metrics.psnr_db) else round(c.metrics.psnr_db, 2))

    return {"id": result.case.id, "passed": result.passed, "page": page,
            "golden_psnr_db": psnr(result.drift), "live_psnr_db": psnr(result.kernel),
            "candidate": result.candidate}


def write_index(folder: Path) -> Path:
    """``index.html`` listing every case page in ``folder``, failures first."""
    entries = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    entries.sort(key=lambda e: (e["passed"], e["id"]))
    rows = "\n".join(
        f'<tr><td>{"pass" if e["passed"] else "<b>FAIL</b>"}</td>'
        f'<td><a href="{html.escape(e["page"])}">{html.escape(e["id"])}</a></td>'
        f'<td>{e["golden_psnr_db"] if e["golden_psnr_db"] is not None else "-"}</td>'
        f'<td>{e["live_psnr_db"] if e["live_psnr_db"] is not None else "-"}</td>'
        f'<td>{html.escape(e["candidate"])}</td></tr>'
        for e in entries
    )
    index = Path(folder) / "index.html"
    index.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>numguard golden cases</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}
table {{ border-collapse: collapse; }}</style></head><body>
<h1>Golden cases</h1>
<table><tr><th>verdict</th><th>case</th><th>PSNR vs golden (dB)</th>
<th>PSNR vs live nn.GroupNorm (dB)</th><th>candidate</th></tr>
{rows}
</table></body></html>
""")
    return index
