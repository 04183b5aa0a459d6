"""The tidy results table, kept in SQLite in the output folder and exported to CSV and JSON.

Rows are keyed by (model, dataset, analysis, metric): a rerun replaces a metric's row rather than
duplicating it. Skips (what could not be computed, and why), figure data (artifacts) and run records
(versions, configuration) live in the same database so the report needs nothing else, as do the
store's integrity findings (`store_damage`: damaged files moved aside) and the unreadable images of
every dataset used (`unreadable`, taken from the stored shards, so a cached rerun knows them too).
A damaged database, or one that cannot be written, is a UserError naming the file (exit 2).
"""
from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from beyond_inet import registry
from beyond_inet.analyses.base import Metric, Row, Skip
from beyond_inet.analyses.stats import too_few
from beyond_inet.engine.store import atomic_write_bytes
from beyond_inet.errors import UserError

COLUMNS = Row.COLUMNS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  model TEXT, dataset TEXT, analysis TEXT, metric TEXT, value REAL, ci_low REAL, ci_high REAL, n INTEGER,
  run_id TEXT, PRIMARY KEY (model, dataset, analysis, metric));
CREATE TABLE IF NOT EXISTS skips (
  analysis TEXT, model TEXT, dataset TEXT, reason TEXT, run_id TEXT, PRIMARY KEY (analysis, model, dataset, reason));
CREATE TABLE IF NOT EXISTS artifacts (
  analysis TEXT, model TEXT, name TEXT, data TEXT, run_id TEXT, PRIMARY KEY (analysis, model, name));
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, config TEXT);
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, info TEXT);
CREATE TABLE IF NOT EXISTS outputs (model TEXT, dataset TEXT, view TEXT, store_key TEXT,
  PRIMARY KEY (model, dataset, view));
CREATE TABLE IF NOT EXISTS store_damage (path TEXT, reason TEXT, moved_to TEXT, run_id TEXT, found TEXT,
  PRIMARY KEY (path, moved_to));
CREATE TABLE IF NOT EXISTS unreadable (dataset TEXT, file TEXT, reason TEXT, run_id TEXT,
  PRIMARY KEY (dataset, file, reason));
CREATE TABLE IF NOT EXISTS metric_info (analysis TEXT, dataset TEXT, metric TEXT, higher_is_better INTEGER,
  unit TEXT, PRIMARY KEY (analysis, dataset, metric));
CREATE TABLE IF NOT EXISTS run_meta (run_id TEXT, key TEXT, data TEXT, PRIMARY KEY (run_id, key));
"""

# results.json's layout; bump when a key changes meaning or goes away (docs/results.md).
SCHEMA_VERSION = 1


def database_error(path: Path, e: Exception) -> UserError:
    """One line for a results database that is damaged or cannot be written (nothing is deleted)."""
    msg = str(e)
    if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
        return UserError(f"cannot write the results database {path} ({msg}); give --out a writable folder")
    if "disk is full" in msg or "SQLITE_FULL" in msg:
        return UserError(f"no space left on the device writing {path} ({msg}); free some space and rerun")
    return UserError(f"the results database {path} is damaged ({msg}); move it aside and rerun: the stored "
                     f"outputs are kept, so a rerun recomputes the results without inference")


def _read_only_row(path: str | Path, sql: str):
    """The first row `sql` gives on the database at `path`, opened read-only (nothing is created or written)."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchone()
    finally:
        con.close()


def check_database(path: str | Path) -> str | None:
    """Why the results database at `path` is unusable (None when it passes SQLite's quick check); read-only."""
    try:
        got = _read_only_row(path, "PRAGMA quick_check")
    except sqlite3.Error as e:
        return str(e)
    return None if got and got[0] == "ok" else str(got[0] if got else "no answer to an integrity check")


def last_data_root(path: str | Path) -> str | None:
    """The data root of the latest run recorded in the database at `path` (read-only; None when unknown),
    so that `beyond-inet verify` checks stored outputs against the images they were computed from."""
    try:
        row = _read_only_row(path, "SELECT config FROM runs ORDER BY started DESC LIMIT 1")
        return json.loads(row[0]).get("data_root") if row else None
    except (sqlite3.Error, ValueError, AttributeError):
        return None


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class ResultsDB:
    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)
        self.path = self.out / "results.sqlite"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(self.path)
        except (OSError, sqlite3.Error) as e:
            raise UserError(f"cannot open the results database {self.path}: {e}") from None
        try:
            ok = self.con.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(str(ok[0] if ok else "no answer to an integrity check"))
            self.con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self.con.close()
            raise database_error(self.path, e) from None

    def close(self) -> None:
        self.con.close()

    def add_rows(self, rows: Iterable[Row], run_id: str) -> None:
        self.con.executemany(
            "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
            [(r.model, r.dataset, r.analysis, r.metric, _num(r.value), _num(r.ci_low), _num(r.ci_high), int(r.n),
              run_id) for r in rows])
        self.con.commit()

    def clear_skips(self, analysis: str, model: str) -> None:
        self.con.execute("DELETE FROM skips WHERE analysis=? AND model=?", (analysis, model))
        self.con.commit()

    def add_skips(self, skips: Iterable[Skip], run_id: str) -> None:
        self.con.executemany("INSERT OR REPLACE INTO skips VALUES (?,?,?,?,?)",
                             [(s.analysis, s.model, s.dataset, s.reason, run_id) for s in skips])
        self.con.commit()

    def add_artifacts(self, analysis: str, model: str, artifacts: dict, run_id: str) -> None:
        self.con.executemany("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)",
                             [(analysis, model, k, json.dumps(v), run_id) for k, v in artifacts.items()])
        self.con.commit()

    def set_model_info(self, model: str, info: dict) -> None:
        self.con.execute("INSERT OR REPLACE INTO models VALUES (?,?)", (model, json.dumps(info)))
        self.con.commit()

    def set_outputs(self, model: str, keys: dict[tuple[str, str], str]) -> None:
        """Record which store entry holds each (dataset, view) of a model (for per-sample reuse)."""
        self.con.executemany("INSERT OR REPLACE INTO outputs VALUES (?,?,?,?)",
                             [(model, d, v, k) for (d, v), k in keys.items()])
        self.con.commit()

    def output_keys(self) -> dict[tuple[str, str, str], str]:
        """(model, dataset, view) -> store key; load with engine.store.Store(out/'store').existing(key).load()."""
        return {(m, d, v): k for m, d, v, k in self.con.execute("SELECT model, dataset, view, store_key FROM outputs")}

    def add_damage(self, damaged: Iterable, run_id: str, found: str) -> None:
        """Record damaged store files (engine.store.Damage: path, reason, moved_to)."""
        self.con.executemany("INSERT OR REPLACE INTO store_damage VALUES (?,?,?,?,?)",
                             [(d.path, d.reason, d.moved_to or "", run_id, found) for d in damaged])
        self.con.commit()

    def damage(self) -> list[dict]:
        return [{"path": p, "reason": r, "moved_to": m, "run_id": i, "found": f} for p, r, m, i, f in
                self.con.execute("SELECT path, reason, moved_to, run_id, found FROM store_damage ORDER BY found, path")]

    def set_unreadable(self, dataset: str, items: Iterable[tuple[str, str]], run_id: str) -> None:
        """Replace the unreadable images recorded for `dataset` by `items` ((file, reason) pairs)."""
        self.con.execute("DELETE FROM unreadable WHERE dataset=?", (dataset,))
        self.con.executemany("INSERT OR REPLACE INTO unreadable VALUES (?,?,?,?)",
                             [(dataset, f, r, run_id) for f, r in items])
        self.con.commit()

    def unreadable(self) -> list[dict]:
        return [{"dataset": d, "file": f, "reason": r} for d, f, r in
                self.con.execute("SELECT dataset, file, reason FROM unreadable ORDER BY dataset, file")]

    def set_metric_info(self, analysis: str, metrics: Iterable[Metric]) -> None:
        """Each declared metric's direction and unit, taken from its declaration (the one source): results.json
        states them beside the value, so nobody has to guess whether lower is better."""
        self.con.executemany("INSERT OR REPLACE INTO metric_info VALUES (?,?,?,?,?)",
                             [(analysis, m.dataset, m.metric,
                               None if m.higher_is_better is None else int(bool(m.higher_is_better)), m.unit)
                              for m in metrics])
        self.con.commit()

    def metric_info(self) -> dict[tuple[str, str, str], dict]:
        """(analysis, dataset, metric) -> {"higher_is_better": True/False/None, "unit": ...} of declared metrics."""
        return {(a, d, k): {"higher_is_better": None if h is None else bool(h), "unit": u}
                for a, d, k, h, u in self.con.execute("SELECT * FROM metric_info")}

    def set_run_meta(self, run_id: str, key: str, data: Any) -> None:
        """A JSON-able fact about one run (stage timings, the datasets' fingerprints) for results.json."""
        self.con.execute("INSERT OR REPLACE INTO run_meta VALUES (?,?,?)", (run_id, key, json.dumps(data)))
        self.con.commit()

    def run_meta(self, run_id: str) -> dict[str, Any]:
        return {k: json.loads(d) for k, d in self.con.execute("SELECT key, data FROM run_meta WHERE run_id=?",
                                                              (run_id,))}

    def start_run(self, run_id: str, started: str, config: dict) -> None:
        self.con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?)", (run_id, started, None, json.dumps(config)))
        self.con.commit()

    def finish_run(self, run_id: str, finished: str) -> None:
        self.con.execute("UPDATE runs SET finished=? WHERE run_id=?", (finished, run_id))
        self.con.commit()

    # --- reading ---------------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        cur = self.con.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY model, analysis, dataset, metric")
        return [Row(m, d, a, k, *(math.nan if v is None else v for v in (val, lo, hi)), n)
                for m, d, a, k, val, lo, hi, n in cur.fetchall()]

    def skips(self) -> list[Skip]:
        return [Skip(*r) for r in self.con.execute("SELECT analysis, model, dataset, reason FROM skips "
                                                   "ORDER BY analysis, model, dataset")]

    def artifacts(self) -> dict[tuple[str, str, str], Any]:
        return {(a, m, k): json.loads(d) for a, m, k, d in self.con.execute(
            "SELECT analysis, model, name, data FROM artifacts")}

    def models(self) -> dict[str, dict]:
        return {m: json.loads(i) for m, i in self.con.execute("SELECT model, info FROM models")}

    def runs(self) -> list[dict]:
        return [{"run_id": r, "started": s, "finished": f, "config": json.loads(c)}
                for r, s, f, c in self.con.execute("SELECT * FROM runs ORDER BY started")]

    def provenance(self) -> dict[str, Any]:
        """results.json: the latest run's resolved configuration, versions and stage timings, then every row
        with its direction and too-few flag (docs/results.md). Built from the same tables the report's
        reproducibility block reads."""
        runs = self.runs()
        latest = runs[-1] if runs else {"run_id": None, "started": None, "finished": None, "config": {}}
        cfg = dict(latest["config"])
        meta = self.run_meta(latest["run_id"]) if latest["run_id"] else {}
        infos = self.models()
        models = []
        for spec in cfg.get("models", []):
            info = dict(infos.get(spec, {}))
            weights = info.pop("weights", None)
            models.append({"spec": spec, "weights": weights, "weights_hash": weights_hash(weights),
                           **{k: v for k, v in info.items() if k != "spec"}})
        analyses = options_in_effect(cfg)
        directions = self.metric_info()
        run_of = {tuple(t[:4]): t[4] for t in self.con.execute(
            "SELECT model, dataset, analysis, metric, run_id FROM results")}
        rows = []
        for r in self.rows():
            d = directions.get((r.analysis, r.dataset, r.metric), {})
            row = {c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in zip(COLUMNS, r.as_tuple())}
            rows.append({**row, "higher_is_better": d.get("higher_is_better"), "unit": d.get("unit"),
                         "declared": bool(d), "too_few": too_few(int(r.n)),
                         "run_id": run_of.get((r.model, r.dataset, r.analysis, r.metric))})
        config = {"models": models, "datasets": meta.get("datasets", []),
                  "analyses": [{"name": a, "options": analyses.get(a, {})} for a in cfg.get("analyses", [])],
                  "run_options": analyses.get(registry.RUN_SCOPE, {}),
                  **{k: cfg.get(k) for k in ("seed", "n_boot", "limit", "precision", "numerics", "device",
                                             "batch_size", "num_workers", "logit_scale", "executor", "data_root",
                                             "options", "log_samples")}}
        return {"schema": "beyond-inet results", "schema_version": SCHEMA_VERSION,
                "run": {k: latest.get(k) for k in ("run_id", "started", "finished")},
                "config": config, "versions": cfg.get("versions", {}), "timings_s": meta.get("timings", {}),
                "results": rows,
                "skips": [{"analysis": s.analysis, "model": s.model, "dataset": s.dataset, "reason": s.reason}
                          for s in self.skips()]}

    def export(self) -> tuple[Path, Path]:
        """Write results.csv (the stable columns) and results.json (those rows inside the run's provenance,
        ``provenance``) next to the database.

        Each file goes to a temporary name in the same folder and is renamed over the old one: a full disk
        leaves the previous complete file, and the error names the file and its folder's free space."""
        rows = self.rows()
        csv_path, json_path = self.out / "results.csv", self.out / "results.json"
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if isinstance(x, float) and math.isnan(x) else x for x in r.as_tuple()])
        atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
        atomic_write_bytes(json_path, json.dumps(self.provenance(), indent=1, default=str).encode("utf-8"))
        return csv_path, json_path


def weights_hash(weights_id: str | None) -> str | None:
    """The content hash a weights id ends in (``hub:arch.tag:<hash>``, ``random:<hash>``, ``file:<hash>``)."""
    if not weights_id or ":" not in weights_id:
        return None
    tail = weights_id.rsplit(":", 1)[1]
    return tail if tail and all(c in "0123456789abcdef" for c in tail.lower()) else None


def options_in_effect(cfg: dict) -> dict[str, dict[str, Any]]:
    """Every option of the run's analyses (and the run-wide ones, under ``registry.RUN_SCOPE``) with the value
    it had: the user's, else the declared default. One source for results.json and the report."""
    ran = set(cfg.get("analyses") or [])
    given = cfg.get("options") or {}
    out: dict[str, dict[str, Any]] = {}
    for key, (owner, opt) in registry.all_options().items():
        if owner in ran or owner == registry.RUN_SCOPE:
            out.setdefault(owner, {})[key] = given.get(key, opt.default)
    return out
