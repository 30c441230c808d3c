"""The explorer page: Bokeh figures in one self-contained HTML file (BokehJS inlined, images as data URIs).

One ``ColumnDataSource`` holds a row per mapped image -- its split index,
thumbnail (a data URI), labels, and for each run ``r`` its map coordinates ``x_r, y_r``, its
outlier flag and its k neighbours ``nn_r`` / similarities ``sim_r`` -- and every
figure draws from it, so a selection (a click) in one map is the selection of
all of them (Bokeh's linked selection: CE vs SupCon vs HCL on the same images).

* Colour: one scatter renderer per class and level (views of the shared source
  with an ``IndexFilter``); the colour switch shows the fine or the super-class
  renderers and swaps the legend's items (a small CustomJS, which remembers the
  classes hidden at each level). With super-classes, a fine class takes its
  super-class's hue in its own shade (:func:`class_colours`): 36 species of 6
  genera read as 6 families, and a species next to another genus stands out.
* Legend: Bokeh's interactive legend (``click_policy='hide'``) below the last
  map (the page fits a 1,280-px window); hiding a class there hides it in every
  map and takes its points out of hover, click and the outlier rings.
* Hover: Bokeh's ``HoverTool`` with an HTML tooltip, ``<img src="@thumb">``,
  fine and super label, and whether the image is an outlier in that run. It
  (and the click) reads an invisible layer over the shown classes' points, so
  that overlapping classes give one tooltip, not one per class renderer.
* Click: one image, the shown point nearest the cursor (a ``Tap`` event, not
  the TapTool, which selects every point under the cursor), marked in every
  map. A CustomJS fills the neighbour panel (a ``Div``) from the selected row's
  ``nn_r`` / ``sim_r``: each run's k nearest neighbours in the WHOLE split,
  images, labels, cosine similarity; another fine class framed red, another
  super-class framed purple. A neighbour's image is clickable: it becomes the
  query.
* Box / lasso select (and the search box: an image number, or part of a class
  name) select many images: the panel shows them as a grid of clickable images.
* Outliers: a ring renderer per map over that run's outliers (magenta, under the
  points, so the selection stays on top), shown by a ``Toggle``, with the counts
  on the page.
* The header's metrics table names its columns in words (``kNN top-1 (k=3),
  species``), the raw results.json key on hover.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from fgjax.errors import ExplorerError
from fgjax.explore import embedding as embedding_lib


EXTRA_HINT = "configs/explore.py needs the extra 'explore' (Bokeh): pip install -e '.[explore]'"
TOOLTIP_PX = 96  # the thumbnail's side in the tooltip and the panel (small images are enlarged, nearest)
GRID_PX = 48  # a selected image's side in the grid of a box / lasso / search selection
GRID_MAX = 400  # images shown in that grid (the count says how many were selected)
PAGE_PX = 1260  # the page's width: it fits a 1,280-px window
CLICK_RADIUS_PX = 10  # a click selects the nearest shown point within this distance
_WRONG = "#d62728"  # another fine class
_WRONG_SUPER = "#7b3294"  # another super-class (what HCL is about)
_RIGHT = "#2ca02c"
_RING = "#e7298a"  # outlier rings: neither black (the selection) nor a class colour's usual hue


def bokeh() -> Any:
  """The ``bokeh`` package, or an ExplorerError naming the extra (one line)."""
  try:
    import bokeh
    import bokeh.embed  # noqa: F401
    import bokeh.models  # noqa: F401
    import bokeh.plotting  # noqa: F401
    import bokeh.resources  # noqa: F401
  except ImportError:
    raise ExplorerError(EXTRA_HINT) from None
  return bokeh


def palette(n: int) -> list[str]:
  """``n`` class colours: Category10/20 (matplotlib's tab10/tab20, as the pictures) up to 20, else Turbo."""
  from bokeh import palettes
  if n <= 10:
    return list(palettes.Category10[10][:n])
  if n <= 20:
    return list(palettes.Category20[20][:n])
  return list(palettes.turbo(n))


def class_colours(ex: embedding_lib.Explorer) -> tuple[list[str], list[str] | None]:
  """``(fine colours, super colours or None)``.

  Without super-classes, :func:`palette`. With them, each super-class gets a
  palette hue and its fine classes shades of it: HLS lightness spread over
  [0.3, 0.72] in class order (a class whose images carry several super labels
  takes the most frequent; a class absent from the split is grey).
  """
  import colorsys
  n_fine = len(ex.fine_names)
  if ex.super is None:
    return palette(n_fine), None
  supers = palette(len(ex.super_names))
  owner = np.full(n_fine, -1)
  for c in range(n_fine):
    labels = ex.super[ex.fine == c]
    if labels.size:
      owner[c] = int(np.bincount(labels).argmax())
  fine = ["#999999"] * n_fine
  for g, base in enumerate(supers):
    members = np.flatnonzero(owner == g)
    h, _, sat = colorsys.rgb_to_hls(*(int(base[i:i + 2], 16) / 255 for i in (1, 3, 5)))
    for j, c in enumerate(members):
      light = 0.3 + 0.42 * j / (len(members) - 1) if len(members) > 1 else 0.5
      rgb = colorsys.hls_to_rgb(h, light, max(sat, 0.45))
      fine[c] = "#" + "".join(f"{round(255 * v):02x}" for v in rgb)
  return fine, supers


_METRIC_WORDS = ((r"knn(\d+)_top(\d+)_(fine|super)", "kNN top-{1} (k={0})"),
                 (r"probe(\d+)_top(\d+)_(fine|super)", "linear probe top-{1}, {0} % of the labels"),
                 (r"map_(fine|super)", "mAP"), (r"rank(\d+)_(fine|super)", "rank-{0}"),
                 (r"recall@(\d+)_(fine|super)", "Recall@{0}"),
                 (r"head_top(\d+)_(fine|super)", "own head top-{0}"))


def metric_title(key: str, levels: tuple[str, str]) -> str:
  """``knn3_top1_fine`` -> ``kNN top-1 (k=3), species`` (``levels``: the data's names of fine and super)."""
  import re
  for pattern, words in _METRIC_WORDS:
    m = re.fullmatch(pattern, key)
    if m:
      *numbers, level = m.groups()
      return words.format(*numbers) + ", " + levels[0 if level == "fine" else 1]
  return key.replace("_", " ")


def _fmt(key: str, value: Any) -> str:
  """Fractions in %, counts as they are (as results.md)."""
  if isinstance(value, float):
    if math.isnan(value):
      return "n/a"
    return f"{100 * value:.2f}" if 0.0 <= value <= 1.0 and not key.startswith("outliers_") else f"{value:.4g}"
  return html.escape(str(value))


def _header(ex: embedding_lib.Explorer) -> str:
  """The page's top: what is shown, the runs' headline metrics, the outlier counts."""
  main = ex.runs[0]
  n, m = ex.size, ex.shown.size
  mapped = (f"all {n:,} images of the {ex.split} split" if m == n else
            f"<b>{m:,} of the {n:,} images</b> of the {ex.split} split (a seeded subset, seed {ex.seed}: the page "
            f"stays usable; raise --config.max_points to map more)")
  keys = []
  for r in ex.runs:
    keys += [key for key in r.metrics if key not in keys and not key.startswith("outlier")]
  head = "".join(f"<th title='{html.escape(k)}'>{html.escape(metric_title(k, ex.levels))}</th>" for k in keys)
  rows = []
  for r in ex.runs:
    count = int(r.outliers.sum())
    stored = r.metrics.get(f"outliers_{ex.outlier_level}")
    check = "" if stored is None or ex.split != "test" else (
        f" (results.json: {stored})" if stored == count else f" (<b>results.json: {stored}</b>, another checkpoint?)")
    cells = "".join(f"<td>{_fmt(k, r.metrics[k]) if k in r.metrics else ''}</td>" for k in keys)
    rows.append(f"<tr><td><b>{html.escape(r.label)}</b></td><td>{r.step}</td>{cells}"
                f"<td>{count} ({100 * count / n:.1f} %){check}</td>"
                f"<td style='color:#777'>{html.escape(r.metrics_source)}</td></tr>")
  levels = ex.levels[0] + (f" or {ex.levels[1]} (the switch; a {ex.levels[0]} in a shade of its {ex.levels[1]}'s "
                           "colour)" if ex.super is not None else "")
  return (
      f"<h2 style='margin:4px 0'>Embedding explorer: {html.escape(main.label)}</h2>"
      f"<div style='font-size:13px;line-height:1.45'>"
      f"{ex.map_name} of the frozen encoder's pooled features: {mapped}. Data: {html.escape(ex.description)}. "
      f"Coloured by {levels}; click a class in the legend to hide or show it in every map.<br>"
      f"<b>Hover</b> a point: its image and labels. <b>Click</b> a point: its {ex.k} nearest neighbours in the whole "
      f"split (cosine similarity, the query left out, ties to the lower index: the ranking rank-k, Recall@k and "
      f"mAP count); another {ex.levels[0]} is framed red"
      + (f", another {ex.levels[1]} purple" if ex.super is not None else "") +
      f"; click a neighbour to make it the query. Selecting a point in one map selects it in the others. "
      f"<b>Box / lasso select</b> or <b>search</b> (an image number, or part of a class name): the images as a "
      f"grid.<br>"
      f"<b>Outliers</b>: images whose nearest class centroid (cosine, {ex.outlier_level} level, whole {ex.split} "
      f"split) is not their own class (HCL's measure, the suite's <code>outliers_{ex.outlier_level}</code>).</div>"
      f"<table style='font-size:12px;border-collapse:collapse;margin-top:6px' border='1' cellpadding='3'>"
      f"<tr><th>run</th><th>step</th>{head}<th>outliers, {ex.outlier_level}</th><th>metrics from</th></tr>"
      f"{''.join(rows)}</table>"
      f"<div style='font-size:11px;color:#777'>Fractions in %. Metrics are the run's own (results.json); the "
      f"outlier counts are recomputed here on the {ex.split} split.</div>")


_SWITCH_JS = """
// Colour by fine (0) or super-class (1): show that level's renderers (except the classes hidden
// at that level before) and give the legend that level's items.
const level = cb_obj.active, other = 1 - level;
const hidden = window.fgjaxHidden || (window.fgjaxHidden = [[], []]);
hidden[other] = renderers[other][0].map((r) => !r.visible);
for (let lv = 0; lv < 2; lv++) {
  for (const run of renderers[lv]) {
    run.forEach((r, c) => { r.visible = lv == level && !hidden[lv][c]; });
  }
}
legend.items = items[level];
"""

_VISIBLE_JS = """
// A class shown or hidden on the last map (legend click, colour switch): the same in the other maps;
// the hover/click layer's rows and the outlier rings become the shown classes' rows (once per burst).
const k = classes.indexOf(cb_obj);
for (const run of peers) { run[k].visible = cb_obj.visible; }
if (!window.fgjaxRowsPending) {
  window.fgjaxRowsPending = true;
  setTimeout(() => {
    window.fgjaxRowsPending = false;
    const rows = [];
    for (const r of classes) { if (r.visible) { for (const i of r.view.filter.indices) rows.push(i); } }
    hover_rows.indices = rows.sort((a, b) => a - b);
    const shown = new Set(rows);
    ring_filters.forEach((f, r) => { f.indices = outlier_rows[r].filter((i) => shown.has(i)); });
  }, 0);
}
"""

_TAP_JS = """
// One click = one image: the shown point nearest the cursor within `radius` px (ties: the lower row),
// or none when the click is on empty space. (The TapTool would select every point under the cursor.)
const xs = source.data['x_' + r], ys = source.data['y_' + r];
const kx = fig.inner_width / (fig.x_range.end - fig.x_range.start);
const ky = fig.inner_height / (fig.y_range.end - fig.y_range.start);
let best = -1, bestd = radius * radius;
for (const i of rows.indices) {
  const dx = (xs[i] - cb_obj.x) * kx, dy = (ys[i] - cb_obj.y) * ky;
  const d = dx * dx + dy * dy;
  if (d < bestd || (d == bestd && best < 0)) { best = i; bestd = d; }
}
source.selected.indices = best < 0 ? [] : [best];
"""

_SEARCH_JS = """
// Search: '#12' or '12' selects image 12 (when it is on the map); other text selects every shown image
// whose class name contains it (case-insensitive), shown as a grid in the panel.
const q = cb_obj.value.trim(), d = source.data;
if (!q) { source.selected.indices = []; return; }
const m = q.match(/^#?(\\d+)$/);
if (m) {
  let row = -1;
  d.index.forEach((v, i) => { if (Number(v) == Number(m[1])) row = i; });
  source.selected.indices = row < 0 ? [] : [row];
  if (row < 0) panel.text = '<i>image #' + Number(m[1]) + ' is not on the map</i>';
  return;
}
const needle = q.toLowerCase(), hits = [];
d.fine_name.forEach((n, i) => {
  if (n.toLowerCase().includes(needle) || (d.super_name && d.super_name[i].toLowerCase().includes(needle))) hits.push(i);
});
source.selected.indices = hits;
if (!hits.length) panel.text = '<i>no class name contains "' + q.replace(/[&<>"']/g, '') + '"</i>';
"""

_PANEL_JS = """
// The neighbour panel: one selected image -> its k neighbours in each run; several -> a grid of them.
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
const sel = source.selected.indices;
if (sel.length == 0) { panel.text = hint; return; }
const d = source.data;
if (!window.fgjaxRowOf) {
  window.fgjaxRowOf = new Map();
  d.index.forEach((v, i) => window.fgjaxRowOf.set(Number(v), i));
  // A click on an image in the panel makes it the query (when it is on the map).
  window.fgjaxSelect = (i) => { const r = window.fgjaxRowOf.get(Number(i)); if (r !== undefined) source.selected.indices = [r]; };
}
const thumb = (i) => { const r = window.fgjaxRowOf.get(i); return r === undefined ? extra[String(i)] : d.thumb[r]; };
const labels = (i) => esc(fine_names[fine[i]]) + (super_names ? '<br><span style="color:#555">' + esc(super_names[sup[i]]) + '</span>' : '');
const img = (i, border, size) => {
  const on = window.fgjaxRowOf.has(i);
  return '<img src="' + thumb(i) + '" width="' + size + '" height="' + size + '" title="#' + i + '"' +
      (on ? ' onclick="window.fgjaxSelect(' + i + ')"' : '') +
      ' style="image-rendering:pixelated;border:3px solid ' + border + (on ? ';cursor:pointer' : '') + '">';
};
if (sel.length > 1) {
  let h = '<div style="font-size:12px"><b>' + sel.length + ' images selected</b>' +
      (sel.length > grid_max ? ' (the first ' + grid_max + ' shown)' : '') + ': click one for its neighbours.' +
      '<div style="display:flex;gap:4px;flex-wrap:wrap;margin-top:4px">';
  sel.slice(0, grid_max).forEach((row) => {
    const i = Number(d.index[row]);
    h += '<div class="fgjax-grid" data-index="' + i + '" style="width:' + (grid_px + 6) + 'px;font-size:9px;' +
         'text-align:center;overflow-wrap:anywhere">' + img(i, '#ccc', grid_px) + '<br>#' + i + '</div>';
  });
  panel.text = h + '</div></div>';
  return;
}
const row = sel[0], q = Number(d.index[row]);
let h = '<div style="font-size:12px">';
h += '<div style="display:flex;gap:10px;align-items:flex-start;margin-bottom:6px">' + img(q, '#333', px) +
     '<div style="overflow-wrap:anywhere"><b>query #' + q + '</b><br>' + labels(q) + '</div></div>';
runs.forEach((label, r) => {
  const nn = d['nn_' + r][row], sim = d['sim_' + r][row];
  const hits = nn.filter((j) => fine[j] == fine[q]).length;
  const super_hits = sup ? nn.filter((j) => sup[j] == sup[q]).length : null;
  const out = d['outlier_' + r][row] ? ', <b>an outlier</b>' : '';
  h += '<div style="margin-top:4px"><b>' + esc(label) + '</b>: ' + hits + ' of ' + nn.length +
       ' neighbours of the same ' + level_names[0] +
       (sup ? ', ' + super_hits + ' of the same ' + level_names[1] : '') + out +
       '</div><div style="display:flex;gap:6px;flex-wrap:wrap">';
  nn.forEach((j, t) => {
    const same = fine[j] == fine[q], same_super = !sup || sup[j] == sup[q];
    const border = same ? right : (same_super ? wrong : wrong_super);
    const mark = same ? '' : (same_super ? ' &#10007; ' + level_names[0] : ' &#10007;&#10007; ' + level_names[1]);
    h += '<div class="fgjax-nn" data-index="' + j + '" style="width:' + (px + 8) + 'px;text-align:center;' +
         'font-size:11px;overflow-wrap:anywhere">' +
         img(j, border, px) + '<br>' + (t + 1) + '. #' + j + mark +
         '<br>cos ' + Number(sim[t]).toFixed(3) + '<br>' + labels(j) + '</div>';
  });
  h += '</div>';
});
panel.text = h + '</div>';
"""


def _tooltip(ex: embedding_lib.Explorer, r: int) -> str:
  super_line = "<div style='color:#555'>@super_name</div>" if ex.super is not None else ""
  return (f"<div style='display:flex;gap:8px;align-items:center;max-width:340px'>"
          f"<img src='@thumb' width='{TOOLTIP_PX}' height='{TOOLTIP_PX}' "
          f"style='image-rendering:pixelated;border:1px solid #999;flex:none'>"
          f"<div style='font-size:12px'><b>@fine_name</b>{super_line}<div>#@index</div>"
          f"<div>@outlier_text_{r}</div></div></div>")


def columns(ex: embedding_lib.Explorer) -> dict[str, Any]:
  """The shared source's columns, a row per mapped image (``ex.shown``)."""
  rows = ex.shown
  data: dict[str, Any] = {
      "index": rows.astype(np.int64),
      "thumb": [ex.thumbs[int(i)] for i in rows],
      "fine_name": [ex.fine_names[c] for c in ex.fine[rows]],
  }
  if ex.super is not None:
    data["super_name"] = [ex.super_names[c] for c in ex.super[rows]]
  for r, run in enumerate(ex.runs):
    data[f"x_{r}"] = run.xy[rows, 0].astype(np.float64)
    data[f"y_{r}"] = run.xy[rows, 1].astype(np.float64)
    data[f"outlier_{r}"] = run.outliers[rows].tolist()
    data[f"outlier_text_{r}"] = [f"nearest-centroid outlier ({ex.outlier_level})" if o else "not an outlier"
                                 for o in run.outliers[rows]]
    # Plain lists (JSON in the page), the neighbours as split indices, best first.
    data[f"nn_{r}"] = run.neighbours[rows].tolist()
    data[f"sim_{r}"] = np.round(run.similarities[rows].astype(np.float64), 4).tolist()
  return data


def build(ex: embedding_lib.Explorer) -> str:
  """The page's HTML (self-contained: BokehJS inlined, thumbnails as data URIs)."""
  from bokeh.embed import file_html
  from bokeh.resources import INLINE
  return file_html(layout(ex), resources=INLINE, title=f"fgjax explorer: {ex.runs[0].label}")


def map_width(num_runs: int) -> int:
  """One map's width in pixels: 760 alone, else the maps side by side within ``PAGE_PX``."""
  return 760 if num_runs == 1 else max(280, min(470, (PAGE_PX - 10 * num_runs) // num_runs))


def layout(ex: embedding_lib.Explorer) -> Any:
  """The page's Bokeh layout (header, controls, the maps, the neighbour panel)."""
  bokeh()
  from bokeh import events
  from bokeh.layouts import column
  from bokeh.layouts import row
  from bokeh.models import CDSView
  from bokeh.models import ColumnDataSource
  from bokeh.models import CustomJS
  from bokeh.models import Div
  from bokeh.models import HoverTool
  from bokeh.models import IndexFilter
  from bokeh.models import Legend
  from bokeh.models import LegendItem
  from bokeh.models import RadioButtonGroup
  from bokeh.models import Scatter
  from bokeh.models import BoxSelectTool
  from bokeh.models import LassoSelectTool
  from bokeh.models import TextInput
  from bokeh.models import Toggle
  from bokeh.plotting import figure

  source = ColumnDataSource(columns(ex), name="points")
  shown = ex.shown
  levels = [("fine", ex.fine[shown], ex.fine_names)]
  if ex.super is not None:
    levels.append(("super", ex.super[shown], ex.super_names))
  # One filter per class, shared by every map: the rows of the source in that class.
  filters = [[IndexFilter(indices=np.flatnonzero(labels == c).tolist()) for c in range(len(names))]
             for _, labels, names in levels]
  fine_colours, super_colours = class_colours(ex)
  colours = [fine_colours] + ([super_colours] if super_colours is not None else [])
  present = [[bool(np.any(labels == c)) for c in range(len(names))] for _, labels, names in levels]

  hover_rows = IndexFilter(indices=list(range(shown.size)), name="hover_rows")  # the shown classes' rows
  many = len(ex.runs) > 1
  width, height = map_width(len(ex.runs)), (440 if many else 620)
  size = 7 if shown.size <= 2000 else 4
  figures, renderers = [], [[] for _ in levels]  # renderers[level][run][class]
  outlier_rings, ring_filters, outlier_rows = [], [], []
  for r, run in enumerate(ex.runs):
    fig = figure(width=width, height=height, title=f"{run.label}: {ex.map_name}", name=f"map_{r}",
                 tools="pan,wheel_zoom,box_zoom,reset,save", active_scroll="wheel_zoom",
                 match_aspect=True, output_backend="canvas")
    fig.xaxis.visible = fig.yaxis.visible = False
    fig.grid.visible = False
    # The outlier rings first: drawn under the points, so that the selected one stays on top of its ring.
    outlier_rows.append(np.flatnonzero(run.outliers[shown]).tolist())
    ring_filters.append(IndexFilter(indices=list(outlier_rows[-1]), name=f"outlier_rows_{r}"))
    rings = fig.scatter(f"x_{r}", f"y_{r}", source=source, view=CDSView(filter=ring_filters[-1]),
                        size=size + 8, fill_alpha=0.0, line_color=_RING, line_width=2.0,
                        nonselection_fill_alpha=0.0, nonselection_line_alpha=1.0, nonselection_line_color=_RING,
                        selection_fill_alpha=0.0, selection_line_color=_RING, visible=False, name=f"outliers_{r}")
    outlier_rings.append(rings)
    by_class = []
    for lv, ((level, _, names), level_filters, level_colours) in enumerate(zip(levels, filters, colours)):
      level_renderers = []
      for c in range(len(names)):
        g = fig.scatter(f"x_{r}", f"y_{r}", source=source, view=CDSView(filter=level_filters[c]), size=size,
                        fill_color=level_colours[c], line_color=level_colours[c], fill_alpha=0.8, line_alpha=0.9,
                        nonselection_fill_alpha=0.25, nonselection_line_alpha=0.25,
                        visible=lv == 0, name=f"{level}_{c}_{r}")
        # The selected image, larger and outlined in every map.
        g.selection_glyph = Scatter(x=f"x_{r}", y=f"y_{r}", size=size + 8, fill_color=level_colours[c],
                                    fill_alpha=1.0, line_color="black", line_width=3)
        level_renderers.append(g)
      renderers[lv].append(level_renderers)
      by_class += level_renderers
    # Hover and click go through one invisible layer over the shown classes' points: one tooltip (one
    # renderer, and Bokeh >= 3.8's HoverTool.limit one point) instead of one per class under the mouse.
    layer = fig.scatter(f"x_{r}", f"y_{r}", source=source, view=CDSView(filter=hover_rows), size=size,
                        fill_alpha=0.0, line_alpha=0.0, selection_fill_alpha=0.0, selection_line_alpha=0.0,
                        nonselection_fill_alpha=0.0, nonselection_line_alpha=0.0, name=f"hover_{r}")
    limit = {"limit": 1} if "limit" in HoverTool.properties() else {}
    fig.add_tools(HoverTool(renderers=[layer], tooltips=_tooltip(ex, r), **limit),
                  BoxSelectTool(renderers=[layer]), LassoSelectTool(renderers=[layer]))
    fig.js_on_event(events.Tap, CustomJS(args=dict(source=source, rows=hover_rows, fig=fig, r=r,
                                                   radius=CLICK_RADIUS_PX), code=_TAP_JS))
    figures.append(fig)

  # The legend (below the last map, so that the page keeps its width) lists the classes present on the
  # map; hiding one hides it everywhere.
  items = [[LegendItem(label=names[c], renderers=[renderers[lv][-1][c]]) for c in range(len(names)) if present[lv][c]]
           for lv, (_, _, names) in enumerate(levels)]
  longest = max(len(item.label.value) for level_items in items for item in level_items)
  ncols = max(1, width // min(width, 30 + 6 * longest))
  legend = Legend(items=items[0], click_policy="hide", label_text_font_size="8pt", glyph_height=12,
                  glyph_width=12, spacing=1, label_height=12, padding=4, name="legend", ncols=ncols)
  figures[-1].add_layout(legend, "below")
  rows_needed = math.ceil(max(len(i) for i in items) / ncols)
  figures[-1].height += 14 * rows_needed + 12  # the legend's room, not taken from the map
  # One callback for every class renderer of the last map: the other maps follow, hover and click skip
  # the hidden classes.
  last_map = [g for lv in range(len(levels)) for g in renderers[lv][-1]]
  peers = [[g for lv in range(len(levels)) for g in renderers[lv][r]] for r in range(len(ex.runs) - 1)]
  on_visible = CustomJS(args=dict(classes=last_map, peers=peers, hover_rows=hover_rows, ring_filters=ring_filters,
                                  outlier_rows=outlier_rows), code=_VISIBLE_JS)
  for g in last_map:
    g.js_on_change("visible", on_visible)

  controls = []
  if len(levels) > 1:
    switch = RadioButtonGroup(labels=["fine class", "super-class"], active=0, name="colour_switch")
    switch.js_on_change("active", CustomJS(args=dict(renderers=renderers, items=items, legend=legend),
                                           code=_SWITCH_JS))
    controls += [Div(text="<b>Colour by</b>", styles={"padding-top": "6px"}), switch]
  counts = ", ".join(str(int(run.outliers.sum())) for run in ex.runs)
  toggle = Toggle(label=f"Highlight outliers ({counts} of {ex.size:,}, {ex.outlier_level} level)",
                  active=False, name="outlier_toggle", width=360)
  for rings in outlier_rings:
    toggle.js_link("active", rings, "visible")
  controls.append(toggle)

  hint = f"<i>Click a point to see its {ex.k} nearest neighbours.</i>"
  page_width = min(PAGE_PX, len(ex.runs) * (width + 10) + 200)
  panel = Div(text=hint, name="neighbour_panel", width=page_width)
  search = TextInput(placeholder="search: image # or class name", name="search", width=260)
  search.js_on_change("value", CustomJS(args=dict(source=source, panel=panel), code=_SEARCH_JS))
  controls.append(search)
  shown_set = set(shown.tolist())
  extra = {str(i): uri for i, uri in ex.thumbs.items() if i not in shown_set}  # neighbours off the map
  source.selected.js_on_change("indices", CustomJS(
      args=dict(source=source, panel=panel, hint=hint, runs=[run.label for run in ex.runs], extra=extra,
                fine=ex.fine.tolist(), sup=ex.super.tolist() if ex.super is not None else None,
                fine_names=ex.fine_names, super_names=ex.super_names, px=TOOLTIP_PX, wrong=_WRONG,
                wrong_super=_WRONG_SUPER, right=_RIGHT, level_names=list(ex.levels), grid_px=GRID_PX,
                grid_max=GRID_MAX),
      code=_PANEL_JS))

  return column(Div(text=_header(ex), name="header", width=page_width), row(*controls), row(*figures), panel)


def write(path: str, ex: embedding_lib.Explorer) -> str:
  """Writes the page to ``path`` (UTF-8)."""
  with open(path, "w", encoding="utf-8") as f:
    f.write(build(ex))
  return path
