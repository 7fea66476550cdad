"""The run page, served by plain HTTP routes beside the Streamlit pages (st.App's own routes).

Why not a Streamlit page: on this project's reference machine a Streamlit page holding four
plotly charts takes 1.3-1.6 s to show on a warm navigation before any run is read (the
frontend boots, opens its websocket, reruns the script, then draws). This page is one HTML
response that carries the run's data inline; plotly.js comes from the browser's cache; the
figures of a run are built once per change of what was read, smoothing and log scale, and
kept. A live run is polled with If-None-Match: nothing new costs a 304, and new data goes to
Plotly.react, which keeps the user's zoom (uirevision).

Everything a run wrote (names, tags, advice, evidence) reaches the page as JSON text that the
script puts in the DOM with textContent only; figure strings are escaped by app/charts.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os

import plotly

HERE = os.path.dirname(os.path.abspath(__file__))
PLOTLY_JS = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
CONFIG = {"displaylogo": False}
#: How often the page asks for new data while the run is live (an unchanged run costs a 304).
LIVE_REFRESH_SECS = 1.0
DATA_MARK = '<script id="view" type="application/json">'


def _asset_version(path: str) -> str:
    st = os.stat(path)
    return hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def clamp_smoothing(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.6
    return min(0.99, max(0.0, v)) if v == v else 0.6


def steps_range(x0, x1) -> tuple[float, float] | None:
    """The step range of a zoomed view from the URL's x0 and x1 (None unless both are finite
    numbers, in order)."""
    try:
        a, b = float(x0), float(x1)
    except (TypeError, ValueError):
        return None
    return (a, b) if math.isfinite(a) and math.isfinite(b) and a < b else None


def view(name: str | None, smoothing: float = 0.6, log_y: bool = False,
         steps: tuple[float, float] | None = None) -> tuple[str, str]:
    """(JSON of everything the page shows for run `name`, its ETag): see build.view."""
    from . import build

    return build.view(name, smoothing, log_y, steps)


@functools.cache
def _template() -> tuple[str, str]:
    """The page around the run's data, split where the data goes (read once per process)."""
    with open(os.path.join(HERE, "page.html"), encoding="utf-8") as f:
        template = f.read()
    template = (template.replace("{{plotly}}", f"assets/plotly-{plotly.__version__}.min.js")
                .replace("{{js}}", f"assets/run.js?v={_asset_version(os.path.join(HERE, 'run.js'))}")
                .replace("{{css}}", f"assets/run.css?v={_asset_version(os.path.join(HERE, 'run.css'))}")
                .replace("{{config}}", json.dumps(CONFIG))
                .replace("{{poll_ms}}", str(int(LIVE_REFRESH_SECS * 1000))))
    head, tail = template.split(DATA_MARK, 1)
    return head, tail


def page_parts(name: str | None, smoothing: float, log_y: bool, steps: tuple[float, float] | None = None):
    """The page in two pieces: its head at once (the browser fetches plotly.js meanwhile,
    or takes it from its cache), then the run's view inline and the script that draws it."""
    head, tail = _template()
    yield head
    try:
        data, _ = view(name, smoothing, log_y, steps)
    except Exception as exc:  # noqa: BLE001 - the page is already on its way: say what broke in it
        data = json.dumps({"state": "error", "name": name, "error": f"{type(exc).__name__}: {exc}"})
    safe = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    yield DATA_MARK + tail.replace("{{data}}", safe)


@functools.cache
def _plotly_js() -> bytes:
    """plotly.js (about 5 MB), read once. Sent whole: a file response goes out in 64 KB pieces,
    each waiting for the interpreter while a first view is being built beside it, so on a cold
    start the browser got plotly.js late, and evaluating it (about a second in a fresh browser)
    is the longest step of a first open."""
    with open(PLOTLY_JS, "rb") as f:
        return f.read()


def routes() -> list:
    """Starlette routes of the run page and its JSON, mounted by app/main.py through st.App."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def settings(request: Request) -> tuple:
        q = request.query_params
        return (q.get("run") or None, clamp_smoothing(q.get("smoothing", 0.6)), q.get("log") in ("1", "true"),
                steps_range(q.get("x0"), q.get("x1")))

    def run_page(request: Request) -> Response:
        return StreamingResponse(page_parts(*settings(request)), media_type="text/html; charset=utf-8",
                                 headers={"Cache-Control": "no-store"})

    def run_json(request: Request) -> Response:
        from . import build

        held = (request.headers.get("if-none-match") or "").strip('"')
        if held and build.unchanged(*settings(request), held):  # compared before anything is built
            return Response(status_code=304, headers={"ETag": f'"{held}"', "Cache-Control": "no-cache"})
        text, etag = view(*settings(request))
        headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        return Response(text, media_type="application/json", headers=headers)

    async def mapping(request: Request) -> Response:
        # JSON only, and from this page's own origin: another site's form cannot send it
        # (a cross-origin JSON POST needs a preflight this server never grants).
        origin = request.headers.get("origin")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json" or (
                origin and origin.split("://", 1)[-1] != request.headers.get("host")):
            return JSONResponse({"error": "JSON from this page only"}, status_code=403)
        try:
            body = json.loads(await request.body())
            from .build import save_mapping

            saved = await run_in_threadpool(save_mapping, str(body.get("run")), body.get("map") or {},
                                            body.get("ignore") or [])
        except (ValueError, AttributeError, OSError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"saved": saved})

    def asset(request: Request) -> Response:
        name = request.path_params["file"]
        forever = {"Cache-Control": "public, max-age=31536000, immutable"}
        if name == f"plotly-{plotly.__version__}.min.js":  # from memory, in one piece: see _plotly_js
            return Response(_plotly_js(), media_type="text/javascript", headers=forever)
        if name in ("run.js", "run.css"):
            kind = "text/javascript" if name.endswith(".js") else "text/css"
            return FileResponse(os.path.join(HERE, name), media_type=kind, headers=forever)
        return Response("not found", status_code=404)

    return [Route("/run", run_page), Route("/api/run", run_json), Route("/api/mapping", mapping, methods=["POST"]),
            Route("/assets/{file}", asset)]


def warm_up() -> None:
    """At server start, in a thread: import what the first view needs (readers, rules, plotly's
    figure classes) and draw a small made-up run once (plotly builds its validators on first
    use), so the first page opened is not the one that pays for it.
    ROOT is indexed when a page first needs it, not here: a run page opened from a shared link
    would share two cores with indexing every run."""
    try:
        from . import build

        _plotly_js()
        build.rehearse()
    except Exception:  # noqa: BLE001 - only a head start; the pages report real errors
        pass
