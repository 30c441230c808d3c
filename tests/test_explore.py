"""The embedding explorer: its page and export from tiny trained runs, its refusals, and a real browser on it."""

import base64
import builtins
import gzip
import html
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from fgjax import errors
from fgjax import train
from fgjax.data import pipeline
from fgjax.evaluate import restore
from fgjax.evaluate import features as features_lib
from fgjax.evaluate import retrieval
from fgjax.explore import config as config_lib
from fgjax.explore import embedding as embedding_lib
from fgjax.explore import make
from fgjax.explore import page as page_lib
from fgjax.methods import registry


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_BOKEH = importlib.util.find_spec("bokeh") is not None
needs_bokeh = pytest.mark.skipif(not HAVE_BOKEH, reason="the extra 'explore' (bokeh) is not installed")


def _cfg(workdir, *compare, **fields):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import explore as explore_config  # configs/explore.py
  finally:
    sys.path.pop(0)
  cfg = explore_config.get_config("runlocal")
  cfg.workdir = str(workdir)
  cfg.compare_workdirs = ",".join(str(w) for w in compare)
  for name, value in fields.items():
    cfg[name] = value
  return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Tiny finished runs: MoCo (SSL, patches data), HCL and CE (supervised, the same hierarchy data)."""
  out = {}
  for method in ("moco", "hcl", "ce"):
    workdir = str(tmp_path_factory.mktemp(method))
    train.train_and_evaluate(registry.config(method, "runlocal"), workdir, devices=jax.devices()[:1])
    out[method] = workdir
  return out


def _copy(workdir, tmp_path, name):
  """A private copy of a run (the explorer writes into the workdir)."""
  target = str(tmp_path / name)
  shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("explorer"))
  return target


def _features(workdir, split="test"):
  """The run's features and labels, extracted here independently of the explorer."""
  restored = restore.restore_run(workdir)
  cfg = restored.train_cfg
  model = registry.frozen_model(cfg, restored.setup.nets, restored.state)
  source = restored.data[split]
  return cfg, features_lib.extract_split(model, source, batch_size=cfg.eval.batch_size,
                                         transform=pipeline.eval_transform(cfg, source))


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _page_model(path, name, kind="ColumnDataSource"):
  """A model of the page's embedded Bokeh document, by type and name (its attributes, arrays decoded)."""
  text = open(path, encoding="utf-8").read()
  docs = re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text, re.S)
  assert len(docs) == 1

  def find(o):
    if isinstance(o, dict):
      if o.get("name") == kind and o.get("attributes", {}).get("name") == name:
        return o
      o = list(o.values())
    if isinstance(o, list):
      for v in o:
        found = find(v)
        if found is not None:
          return found
    return None

  model = find(json.loads(html.unescape(docs[0])))  # (file_html escapes &, <, > in the document)
  assert model is not None, (kind, name)
  return model["attributes"]


def _page_points(path):
  """The page's shared data source (the 'points' ColumnDataSource): column -> values."""
  data = _page_model(path, "points")["data"]
  return {key: value for key, value in ((k, _decode(v)) for k, v in data["entries"])}


def _decode(value):
  if isinstance(value, dict) and value.get("type") == "ndarray":
    raw = base64.b64decode(value["array"]["data"])
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"])
  return value


def _header(path):
  """The HTML of the page's header (run, data, metrics, outlier counts)."""
  return _page_model(path, "header", kind="Div")["text"]


def _self_contained(path):
  """No file or address the page would fetch: scripts inlined, nothing outside them refers elsewhere,
  and the document's own data (thumbnails included) names no address."""
  text = open(path, encoding="utf-8").read()
  assert not re.search(r"<script[^>]*\ssrc=", text)
  outside = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
  assert not re.search(r"\s(src|href)=", outside), outside
  docs = re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text, re.S)
  assert len(docs) == 1 and not re.search(r"https?://|file:", docs[0])
  return text


# ----------------------------------------------------------------------------
# Config and refusals that need no run


def test_config_errors_name_the_field():
  cfg = config_lib.explore_config()
  with pytest.raises(errors.ConfigError, match="'workdir'"):
    config_lib.validate(cfg)
  cfg.workdir = "x"
  for field, value in [("split", "val"), ("map", "pca"), ("export", "csv"), ("outlier_level", "genus"),
                       ("max_points", 2), ("k", 0), ("thumb_size", 0), ("batch_size", -1), ("thumb_format", "gif")]:
    bad = _cfg("x", **{field: value})
    with pytest.raises(errors.ConfigError, match=f"config field '{field}'"):
      config_lib.validate(bad)
  with pytest.raises(errors.ConfigError, match="unknown config field 'maxpoints'.*max_points"):
    config_lib.validate(_with_field(_cfg("x"), "maxpoints", 5))


def _with_field(cfg, name, value):
  cfg.unlock()
  cfg[name] = value
  return cfg


def _without(monkeypatch, package):
  real_import = builtins.__import__

  def refuse(name, *args, **kwargs):
    if name == package or name.startswith(package + "."):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", refuse)


def test_missing_bokeh_is_one_line_before_any_work(monkeypatch, tmp_path):
  _without(monkeypatch, "bokeh")
  with pytest.raises(errors.ExplorerError, match=r"^configs/explore.py needs the extra 'explore' \(Bokeh\): "
                                                 r"pip install -e '\.\[explore\]'$"):
    make.make_explorer(_cfg(tmp_path / "no_run_needed"))  # refused before the workdir is even read


@needs_bokeh
def test_missing_pyarrow_or_umap_is_one_line(monkeypatch, tmp_path):
  _without(monkeypatch, "pyarrow")
  with pytest.raises(errors.ExplorerError, match=r"'parquet' needs pyarrow: pip install pyarrow"):
    make.make_explorer(_cfg(tmp_path, export="parquet"))
  _without(monkeypatch, "umap")
  with pytest.raises(errors.ExplorerError, match=r"'umap' needs the umap-learn package: pip install umap-learn"):
    make.make_explorer(_cfg(tmp_path, map="umap"))


@needs_bokeh
def test_neighbours_are_the_retrieval_metrics_ranking():
  # nearest_neighbours cut at k is the ranking rank-k counts: recall@k from the lists == the metric.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, 60)
  features = rng.normal(size=(60, 6)) + np.eye(6)[labels] * 1.5
  features[7] = features[3]  # an exact tie: the lower index ranks first
  nn, sims = retrieval.nearest_neighbours(features, k=8, chunk_size=16)
  metrics = retrieval.retrieval_metrics(features, labels, ks=(1, 2, 4, 8), compute_map=False, chunk_size=7)
  for k in (1, 2, 4, 8):
    hits = (labels[nn[:, :k]] == labels[:, None]).any(axis=1)
    assert hits.mean() == pytest.approx(metrics[f"recall@{k}"], abs=0)
  assert not (nn == np.arange(60)[:, None]).any()  # leave-one-out
  assert nn[3, 0] == 7 and nn[7, 0] == 3
  f = features / np.linalg.norm(features, axis=1, keepdims=True)
  np.testing.assert_allclose(sims, np.take_along_axis(f @ f.T, nn, axis=1), atol=1e-5)
  queried, _ = retrieval.nearest_neighbours(features, k=8, queries=np.array([40, 3]))
  np.testing.assert_array_equal(queried, nn[[40, 3]])
  with pytest.raises(ValueError, match=r"k must be in \[1, 59\]"):
    retrieval.nearest_neighbours(features, k=60)
  flags = retrieval.nearest_centroid_flags(features, labels, chunk_size=9)
  assert flags.sum() == retrieval.nearest_centroid_outliers(features, labels)["num_outliers"]


def test_thumbnails_keep_small_images_exact_and_shrink_large_ones():
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  uri = embedding_lib.thumbnail_uri(small, 64)
  assert uri.startswith("data:image/png;base64,")
  with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), small)  # its own pixels, lossless
  large = rng.integers(0, 256, (224, 160, 3), dtype=np.uint8)
  for fmt, kind in (("auto", "JPEG"), ("png", "PNG")):
    uri = embedding_lib.thumbnail_uri(large, 64, fmt)
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
      assert im.format == kind and im.size == (46, 64)  # shrunk to fit, aspect kept


@needs_bokeh
def test_page_of_data_without_super_classes(tmp_path):
  # An image folder without a super-class map: no switch, no super labels, fine-level outliers.
  rng = np.random.default_rng(1)
  n, k = 12, 3
  fine = np.repeat(np.arange(3), 4).astype(np.int32)
  features = rng.normal(size=(n, 8)).astype(np.float32) + np.eye(8, dtype=np.float32)[fine] * 2
  nn, sims = retrieval.nearest_neighbours(features, k=k)
  run = embedding_lib.RunEmbedding(
      label="ce (x)", workdir=str(tmp_path), method="ce", step=3, features=features,
      outliers=retrieval.nearest_centroid_flags(features, fine), xy=rng.normal(size=(n, 2)).astype(np.float32),
      neighbours=nn, similarities=sims, metrics={}, metrics_source="no results.json")
  thumbs = {i: embedding_lib.thumbnail_uri(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 64) for i in range(n)}
  ex = embedding_lib.Explorer(split="test", description="folder", fine=fine, fine_names=["a", "b<c", "d"],
                              super=None, super_names=None, file_names=[f"/data/{i}.jpg" for i in range(n)],
                              shown=np.arange(n), queried=np.arange(n), outlier_level="fine", map_name="t-SNE",
                              seed=0, k=k, thumbs=thumbs, thumb_px=8, runs=[run])
  path = page_lib.write(str(tmp_path / "index.html"), ex)
  _self_contained(path)
  points = _page_points(path)
  assert "super_name" not in points and points["fine_name"][4] == "b<c"
  assert "no results.json" in _header(path)
  with pytest.raises(AssertionError):
    _page_model(path, "colour_switch", kind="RadioButtonGroup")
  with np.load(embedding_lib.write_npz(str(tmp_path / "e.npz"), ex, run), allow_pickle=False) as z:
    assert list(z["file_names"][:2]) == ["/data/0.jpg", "/data/1.jpg"] and "super" not in z.files


# ----------------------------------------------------------------------------
# From tiny trained runs


@needs_bokeh
def test_ssl_run_page_neighbours_outliers_and_npz_export(runs, tmp_path):
  workdir = _copy(runs["moco"], tmp_path, "moco")
  out = make.make_explorer(_cfg(workdir, export="npz"))
  ex = out["explorer"]
  page = os.path.join(workdir, "explorer", "index.html")
  assert out["page"] == page and out["exports"] == [os.path.join(workdir, "explorer", "embedding.npz")]
  _self_contained(page)
  header = _header(page)
  assert "Embedding explorer: moco (moco)" in header and "all 16 images of the test split" in header

  # The neighbours are retrieval's, on features extracted independently; the page holds exactly them.
  cfg, extracted = _features(workdir)
  np.testing.assert_array_equal(ex.runs[0].features, extracted["features"])
  nn, sims = retrieval.nearest_neighbours(extracted["features"], k=ex.k, chunk_size=cfg.eval.chunk_size)
  np.testing.assert_array_equal(ex.runs[0].neighbours, nn)
  points = _page_points(page)
  np.testing.assert_array_equal(points["index"], np.arange(16))
  assert points["nn_0"] == nn.tolist()
  np.testing.assert_allclose(points["sim_0"], sims, atol=1e-4)
  assert len(points["thumb"]) == 16 and all(t.startswith("data:image/png;base64,") for t in points["thumb"])

  # The outliers are the suite's: the count of the run's own evaluation (results.json), same split.
  level = ex.outlier_level
  assert level == "super"
  stored = _results(workdir)["trained"][f"outliers_{level}"]
  assert int(ex.runs[0].outliers.sum()) == stored
  assert points["outlier_0"] == ex.runs[0].outliers.tolist()
  assert f"{stored} ({100 * stored / 16:.1f} %) (results.json: {stored})" in header

  # The npz export round-trips without pickles.
  with np.load(out["exports"][0], allow_pickle=False) as z:
    got = dict(z)
  np.testing.assert_array_equal(got["features"], extracted["features"])
  np.testing.assert_array_equal(got["fine"], extracted["fine"])
  np.testing.assert_array_equal(got["super"], extracted["super"])
  np.testing.assert_array_equal(got["index"], np.arange(16))
  np.testing.assert_array_equal(got["outlier"], ex.runs[0].outliers)
  np.testing.assert_array_equal(got["neighbours"], nn)
  np.testing.assert_array_equal(got["xy"], ex.runs[0].xy)
  assert got["xy"].shape == (16, 2) and np.isfinite(got["xy"]).all() and got["in_map"].all()
  assert str(got["method"]) == "moco" and str(got["outlier_level"]) == "super" and str(got["split"]) == "test"
  assert got["fine_names"].dtype.kind == "U" and "file_names" not in got  # embedded data has no files

  md = open(os.path.join(workdir, "results.md")).read()
  assert md.count("## Embedding explorer") == 1 and "[explorer/index.html](explorer/index.html)" in md
  assert "- export: [explorer/embedding.npz](explorer/embedding.npz)" in md
  make.make_explorer(_cfg(workdir, k=3))  # again: the section is replaced, not added; the export on disk stays linked
  md = open(os.path.join(workdir, "results.md")).read()
  assert md.count("## Embedding explorer") == 1 and md.count("(explorer/embedding.npz)") == 1


@needs_bokeh
def test_supervised_comparison_linked_on_the_same_images_with_parquet(runs, tmp_path):
  # pyarrow comes with tensorflow-datasets; without it the comparison is still checked (npz).
  parquet = importlib.util.find_spec("pyarrow") is not None
  hcl, ce = _copy(runs["hcl"], tmp_path, "hcl"), _copy(runs["ce"], tmp_path, "ce")
  out = make.make_explorer(_cfg(hcl, ce, export="parquet" if parquet else "npz"))
  ex = out["explorer"]
  assert [r.label for r in ex.runs] == ["hcl (hcl)", "ce (ce)"]
  _self_contained(out["page"])
  assert _page_model(out["page"], "map_0", kind="Figure") and _page_model(out["page"], "map_1", kind="Figure")
  points = _page_points(out["page"])
  for r, (run, workdir) in enumerate(zip(ex.runs, (hcl, ce))):
    _, extracted = _features(workdir)
    nn, _ = retrieval.nearest_neighbours(extracted["features"], k=ex.k)
    assert points[f"nn_{r}"] == nn.tolist()  # each run its own neighbours, one shared source
    assert int(run.outliers.sum()) == _results(workdir)["trained"]["outliers_super"]
    assert run.metrics["knn3_top1_fine"] == _results(workdir)["trained"]["knn3_top1_fine"]
  assert not np.array_equal(points["x_0"], points["x_1"])  # two maps of the same rows
  # Named by the compared run: a later comparison, or the run alone, adds a page and keeps this one linked.
  assert os.path.basename(out["page"]) == "compare_ce.html"
  alone = make.make_explorer(_cfg(hcl))
  assert os.path.basename(alone["page"]) == "index.html" and os.path.exists(out["page"])
  md = open(os.path.join(hcl, "results.md")).read()
  assert md.count("## Embedding explorer") == 1
  assert "[explorer/index.html](explorer/index.html)" in md and "(explorer/compare_ce.html)" in md
  assert "embedding_ce." in md  # the earlier build's exports stay linked

  # One Parquet file per run, a row per image.
  if not parquet:
    return
  import pyarrow.parquet as pq
  assert [os.path.basename(p) for p in out["exports"]] == ["embedding.parquet", "embedding_ce.parquet"]
  table = pq.read_table(out["exports"][1])
  assert table.num_rows == 16
  assert table.schema.metadata[b"fgjax.method"] == b"ce"
  np.testing.assert_array_equal(np.asarray(table["neighbours"].to_pylist()), ex.runs[1].neighbours)
  np.testing.assert_array_equal(np.asarray(table["features"].to_pylist(), np.float32), ex.runs[1].features)
  assert table["super_name"].to_pylist() == [ex.super_names[s] for s in ex.super]


@needs_bokeh
def test_a_subset_is_mapped_but_neighbours_come_from_the_whole_split(runs, tmp_path):
  workdir = _copy(runs["hcl"], tmp_path, "hcl")
  ex = make.make_explorer(_cfg(workdir, max_points=6, seed=3, thumb_format="jpeg"))["explorer"]
  assert ex.shown.size == 6 and np.all(np.diff(ex.shown) > 0)
  assert all(uri.startswith("data:image/jpeg;base64,") for uri in ex.thumbs.values())
  np.testing.assert_array_equal(ex.shown, embedding_lib.subset(16, 6, 3))
  header = _header(os.path.join(workdir, "explorer", "index.html"))
  assert "6 of the 16 images</b> of the test split (a seeded subset, seed 3" in header
  # Neighbours off the map still have their thumbnails (the panel shows them).
  off_map = set(ex.runs[0].neighbours[ex.shown].reshape(-1).tolist()) - set(ex.shown.tolist())
  assert off_map and off_map <= set(ex.thumbs)
  assert int(ex.runs[0].outliers.sum()) == _results(workdir)["trained"]["outliers_super"]  # whole split
  assert np.isnan(ex.runs[0].xy[np.setdiff1d(np.arange(16), ex.shown)]).all()


@needs_bokeh
def test_runs_on_different_data_and_runs_without_checkpoint_are_one_line(runs, tmp_path):
  with pytest.raises(errors.ExplorerError, match=r"^compare_workdirs: moco \(moco\d*\) has data.name='patches', "
                                                 r"hcl \(hcl\d*\) has 'hierarchy'; runs explored together"):
    make.make_explorer(_cfg(runs["hcl"], runs["moco"]))
  empty = tmp_path / "no_checkpoint"
  empty.mkdir()
  shutil.copy(os.path.join(runs["hcl"], "config.json"), empty / "config.json")
  with pytest.raises(errors.EvaluationError, match="no checkpoint in"):
    make.make_explorer(_cfg(empty))


def test_command_line_refusal_exits_2_with_one_line(runs, tmp_path):
  empty = tmp_path / "no_checkpoint"
  empty.mkdir()
  shutil.copy(os.path.join(runs["hcl"], "config.json"), empty / "config.json")
  for args, match in [((f"--config.workdir={empty}",), "no checkpoint in"),
                      ((f"--config.workdir={runs['hcl']}", f"--config.compare_workdirs={runs['moco']}"),
                       "has data.name='patches'")]:
    proc = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/explore.py:runlocal", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("fgjax: error: ") and match in last and "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(runs["hcl"], "explorer"))


# ----------------------------------------------------------------------------
# A real browser: headless Chromium opens the page from the file system


@pytest.fixture(scope="module")
def browser():
  """A headless Chromium driven by selenium, or a skip naming what is missing (before any run is trained)."""
  try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
  except ImportError:
    pytest.skip("the browser test needs selenium (pip install -e '.[browser-test]')")
  binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
  driver = shutil.which("chromedriver")
  if binary is None or driver is None:
    pytest.skip("the browser test needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)")
  options = Options()
  options.binary_location = binary
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1300"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  chrome = webdriver.Chrome(service=Service(driver), options=options)
  yield chrome
  chrome.quit()


_MAP_READY = """
if (typeof Bokeh === 'undefined' || !Bokeh.documents.length) return false;
const fig = Bokeh.documents[0].get_model_by_name('map_' + arguments[0]);
const view = fig && Bokeh.index.find_one(fig);
return !!(view && view.frame.bbox.width > 0);
"""

_POINT_ON_SCREEN = """
const [r, row] = arguments;
const doc = Bokeh.documents[0];
const data = doc.get_model_by_name('points').data;
const view = Bokeh.index.find_one(doc.get_model_by_name('map_' + r));
const rect = view.canvas_view.el.getBoundingClientRect();
return [rect.left + view.frame.x_scale.compute(data['x_' + r][row]),
        rect.top + view.frame.y_scale.compute(data['y_' + r][row])];
"""

_TOOLTIPS = """
// The shown tooltips' text and images, through the shadow roots Bokeh renders into.
const out = [];
const walk = (root) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (el.classList.contains('bk-tooltip-content') && el.offsetParent !== null) {
      out.push({text: el.innerText,
                images: Array.from(el.querySelectorAll('img')).map((i) => [i.src.slice(0, 22), i.naturalWidth])});
    }
  }
};
walk(document);
return out;
"""


def _mouse(driver, kind, x, y):
  extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
  driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})


def _wait(condition, timeout=30.0):
  end = time.time() + timeout
  while time.time() < end:
    value = condition()
    if value:
      return value
    time.sleep(0.1)
  raise AssertionError("timed out waiting for the page")


@needs_bokeh
def test_browser_hover_shows_the_image_click_shows_the_neighbours(browser, runs, tmp_path):
  driver = browser
  hcl, ce = _copy(runs["hcl"], tmp_path, "hcl"), _copy(runs["ce"], tmp_path, "ce")
  ex = make.make_explorer(_cfg(hcl, ce))["explorer"]
  page = os.path.join(hcl, "explorer", "compare_ce.html")
  driver.get("file://" + page)
  _wait(lambda: driver.execute_script(_MAP_READY, 1))
  # Nothing was fetched but the page itself (BokehJS inlined, images as data URIs).
  fetched = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
  assert all(name.startswith(("data:", "file:")) for name in fetched), fetched

  row = 5
  x, y = driver.execute_script(_POINT_ON_SCREEN, 0, row)
  _mouse(driver, "mouseMoved", x, y)
  shown = _wait(lambda: driver.execute_script(_TOOLTIPS))
  fine, sup = ex.fine_names[ex.fine[row]], ex.super_names[ex.super[row]]
  tip = shown[0]
  assert tip["images"] == [["data:image/png;base64,", ex.thumb_px]]  # the image itself, decoded
  assert fine in tip["text"] and sup in tip["text"] and f"#{row}" in tip["text"]
  assert "outlier" in tip["text"]

  _mouse(driver, "mousePressed", x, y)
  _mouse(driver, "mouseReleased", x, y)
  panel = _wait(lambda: driver.execute_script(
      "return Bokeh.documents[0].get_model_by_name('neighbour_panel').text.includes('fgjax-nn') && "
      "Bokeh.documents[0].get_model_by_name('neighbour_panel').text"))
  assert driver.execute_script("return Bokeh.documents[0].get_model_by_name('points').selected.indices") == [row]
  shown_nn = [int(i) for i in re.findall(r'class="fgjax-nn" data-index="(\d+)"', panel)]
  assert shown_nn == ex.runs[0].neighbours[row].tolist() + ex.runs[1].neighbours[row].tolist()
  assert f"query #{row}" in panel and "hcl (hcl)" in panel and "ce (ce)" in panel
  # Linked selection, as drawn: the same image in the other map is painted opaque in its class colour
  # (a faded, unselected point is mixed with the white background).
  x1, y1 = driver.execute_script(_POINT_ON_SCREEN, 1, row)
  with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as shot:
    pixel = np.asarray(shot.convert("RGB"))[int(round(y1)), int(round(x1))].astype(int)
  colour = page_lib.class_colours(ex)[0][ex.fine[row]]
  expected = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
  assert np.abs(pixel - expected).max() <= 12, (pixel, colour)
  # Hiding a class (its legend entry on the last map) hides it in every map, and hover skips it.
  c = int(ex.fine[row])
  model = "Bokeh.documents[0].get_model_by_name"
  driver.execute_script(f"{model}('fine_{c}_1').visible = false")
  assert not driver.execute_script(f"return {model}('fine_{c}_0').visible")
  _wait(lambda: row not in driver.execute_script(f"return Array.from({model}('hover_rows').indices)"))
  _mouse(driver, "mouseMoved", x + 200, y)
  _mouse(driver, "mouseMoved", x, y)
  time.sleep(0.5)
  assert not any(f"#{row}\n" in t["text"] for t in driver.execute_script(_TOOLTIPS))
  driver.execute_script(f"{model}('fine_{c}_1').visible = true")
  _wait(lambda: row in driver.execute_script(f"return Array.from({model}('hover_rows').indices)"))
  # The colour switch: the super-class renderers replace the fine ones, the legend follows, and a class
  # hidden at one level is still hidden when the switch comes back to it.
  driver.execute_script(f"{model}('fine_{c}_1').visible = false")
  driver.execute_script(f"{model}('colour_switch').active = 1")
  legend = driver.execute_script(f"return {model}('legend').items.map((i) => i.label.value)")
  assert legend == [ex.super_names[s] for s in sorted(set(ex.super.tolist()))]
  assert driver.execute_script(f"return {model}('super_0_0').visible && !{model}('fine_{(c + 1) % 4}_0').visible")
  driver.execute_script(f"{model}('colour_switch').active = 0")
  assert driver.execute_script(f"return !{model}('fine_{c}_0').visible && {model}('fine_{(c + 1) % 4}_0').visible")
  driver.execute_script(f"{model}('fine_{c}_1').visible = true")
  driver.execute_script(f"{model}('outlier_toggle').active = true")
  assert driver.execute_script(f"return {model}('outliers_1').visible")
  _mouse(driver, "mouseMoved", x, y)  # the tooltip back on for the picture
  _wait(lambda: driver.execute_script(_TOOLTIPS))
  # The page fits a 1,280-px window (the window is 1,500 px wide: nothing is clipped by it).
  right = driver.execute_script("const root = Bokeh.documents[0].roots()[0];"
                                "return Bokeh.index.find_one(root).el.getBoundingClientRect().right")
  assert 600 < right <= 1280, right
  # Rings follow hidden classes: hiding a class takes its outliers' rings away in every map.
  outlier_row = int(np.flatnonzero(ex.runs[0].outliers[ex.shown])[0])
  oc = int(ex.fine[ex.shown[outlier_row]])
  driver.execute_script(f"{model}('fine_{oc}_1').visible = false")
  _wait(lambda: outlier_row not in driver.execute_script(f"return Array.from({model}('outlier_rows_0').indices)"))
  driver.execute_script(f"{model}('fine_{oc}_1').visible = true")
  _wait(lambda: outlier_row in driver.execute_script(f"return Array.from({model}('outlier_rows_0').indices)"))
  # One click = one image, even where points overlap: move another image onto this one (0.2 px away).
  other = (row + 1) % ex.shown.size
  driver.execute_script(
      "const s = Bokeh.documents[0].get_model_by_name('points'); const d = {...s.data};"
      "for (const k of ['x_0', 'y_0']) { d[k] = Array.from(d[k]); }"
      "const fig = Bokeh.documents[0].get_model_by_name('map_0');"
      "d.x_0[arguments[1]] = d.x_0[arguments[0]] + 0.2 * (fig.x_range.end - fig.x_range.start) / fig.inner_width;"
      "d.y_0[arguments[1]] = d.y_0[arguments[0]]; s.data = d;", row, other)
  x, y = driver.execute_script(_POINT_ON_SCREEN, 0, row)
  driver.execute_script(f"{model}('points').selected.indices = []")
  _mouse(driver, "mousePressed", x, y)
  _mouse(driver, "mouseReleased", x, y)
  _wait(lambda: driver.execute_script(f"return {model}('points').selected.indices.length"))
  assert driver.execute_script(f"return Array.from({model}('points').selected.indices)") == [row]
  # A neighbour's image in the panel is clickable: it becomes the query.
  j = int(ex.runs[0].neighbours[row][0])
  driver.execute_script("window.fgjaxSelect(arguments[0])", j)
  _wait(lambda: f"query #{j}<" in driver.execute_script(f"return {model}('neighbour_panel').text"))
  # The search box: a class name selects its images, shown as a grid.
  name = ex.fine_names[int(ex.fine[row])]
  driver.execute_script(f"{model}('search').value = arguments[0]", name)
  grid = _wait(lambda: driver.execute_script(
      f"const t = {model}('neighbour_panel').text; return t.includes('fgjax-grid') && t"))
  assert len(re.findall(r'class="fgjax-grid"', grid)) == int(np.sum(ex.fine[ex.shown] == ex.fine[row]))
  screenshot = os.environ.get("FGJAX_EXPLORER_SCREENSHOT", str(tmp_path / "explorer.png"))
  assert driver.save_screenshot(screenshot)
  errors_logged = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
  assert not errors_logged, errors_logged


# ----------------------------------------------------------------------------
# The page's layout and words (the browser test checks what they do)


def _hier_explorer(tmp_path, runs_count=3, n_super=6, per_super=6):
  rng = np.random.default_rng(2)
  n_fine = n_super * per_super
  fine = np.repeat(np.arange(n_fine), 2).astype(np.int32)
  sup = (fine // per_super).astype(np.int32)
  n = fine.size
  features = rng.normal(size=(n, 8)).astype(np.float32)
  nn, sims = retrieval.nearest_neighbours(features, k=3)
  runs_ = [embedding_lib.RunEmbedding(
      label=f"run {r}", workdir=str(tmp_path / f"r{r}"), method="hcl", step=1, features=features,
      outliers=retrieval.nearest_centroid_flags(features, sup), xy=rng.normal(size=(n, 2)).astype(np.float32),
      neighbours=nn, similarities=sims, metrics={"knn3_top1_fine": 0.5, "probe100_top1_super": 0.25},
      metrics_source="results.json") for r in range(runs_count)]
  thumbs = {i: embedding_lib.thumbnail_uri(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 64) for i in range(n)}
  return embedding_lib.Explorer(
      split="test", description="hierarchy", fine=fine, fine_names=[f"genus{s // per_super}_species{s % per_super}"
                                                                    for s in range(n_fine)],
      super=sup, super_names=[f"genus{g}" for g in range(n_super)], file_names=None, shown=np.arange(n),
      queried=np.arange(n), outlier_level="super", map_name="t-SNE", seed=0, k=3, thumbs=thumbs, thumb_px=8,
      runs=runs_, levels=("species", "genus"))


def _widths(model):
  """The widths of the layout's children, row by row (a row: the sum of its children)."""
  from bokeh.layouts import Row
  out = []
  for child in model.children:
    if isinstance(child, Row):
      out.append(sum(c.width or 0 for c in child.children))
    else:
      out.append(child.width or 0)
  return out


@needs_bokeh
@pytest.mark.parametrize("runs_count", [1, 2, 3, 4])
def test_the_page_fits_1280_px_with_the_legend_below(tmp_path, runs_count):
  layout = page_lib.layout(_hier_explorer(tmp_path, runs_count))
  assert max(_widths(layout)) <= 1280, _widths(layout)
  legend = [m for m in layout.select({"name": "legend"})]
  assert len(legend) == 1
  figure = layout.select_one({"name": f"map_{runs_count - 1}"})
  assert legend[0] in figure.below  # not to the right of the map


@needs_bokeh
def test_species_take_their_genus_hue_in_their_own_shade(tmp_path):
  import colorsys
  ex = _hier_explorer(tmp_path, 1)
  fine, supers = page_lib.class_colours(ex)
  assert len(set(fine)) == len(fine)  # 36 distinct colours
  hls = lambda c: colorsys.rgb_to_hls(*(int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)))
  for s, colour in enumerate(fine):
    h_fine, h_super = hls(colour)[0], hls(supers[s // 6])[0]
    assert min(abs(h_fine - h_super), 1 - abs(h_fine - h_super)) < 0.01, (s, colour, supers[s // 6])
  lightness = [hls(fine[s])[1] for s in range(6)]
  assert lightness == sorted(lightness) and lightness[-1] - lightness[0] > 0.3  # shades of one hue


@needs_bokeh
def test_one_click_tap_handler_rings_and_search_are_on_the_page(tmp_path):
  from bokeh.models import TapTool
  ex = _hier_explorer(tmp_path, 2)
  layout = page_lib.layout(ex)
  for r in range(2):
    figure = layout.select_one({"name": f"map_{r}"})
    assert not any(isinstance(t, TapTool) for t in figure.tools)  # it would select every point under the cursor
    assert any("nearest the cursor" in cb.code for cbs in figure.js_event_callbacks.values() for cb in cbs)
    rings = layout.select_one({"name": f"outliers_{r}"})
    assert rings.glyph.line_color == page_lib._RING != "black"
    # under the points: the rings are the map's first renderer
    assert figure.renderers[0] is rings
  assert layout.select_one({"name": "search"}) is not None
  header = layout.children[0].text
  assert "kNN top-1 (k=3), species" in header and "linear probe top-1, 100 % of the labels, genus" in header
  assert "title='knn3_top1_fine'" in header


def test_metric_titles_in_the_data_s_words():
  assert page_lib.metric_title("knn20_top1_fine", ("species", "genus")) == "kNN top-1 (k=20), species"
  assert page_lib.metric_title("map_super", ("fine class", "super-class")) == "mAP, super-class"
  assert page_lib.metric_title("recall@4_fine", ("species", "genus")) == "Recall@4, species"
  assert page_lib.metric_title("feature_spread", ("a", "b")) == "feature spread"
