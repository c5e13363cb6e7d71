"""``create_app``: the FastAPI application of ``wanpy serve``, one loaded model set per app.

Routes: OpenAI's Videos API (``/v1/videos``...), sd.cpp's server schema for video
(``/sdcpp/v1/vid_gen``, ``/sdcpp/v1/jobs/{id}``, ``/sdcpp/v1/capabilities``), progress as
server-sent events (``/v1/videos/{id}/events``) and a small page at ``/``. Every request body is
parsed by the strict schemas of ``wanpy.serve.schemas`` and then checked by ``build_request`` and the
pre-flight before it is queued: what the server cannot run exactly as asked is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:
    raise ImportError("wanpy.serve needs FastAPI and uvicorn: pip install \"wanpy[serve]\"") from exc

from wanpy import _core
from wanpy._version import __version__
from wanpy.errors import AllocationTooLargeError
from wanpy.paths import check_output_path
from wanpy.validation import check_float, check_int
from wanpy.pipeline import LOAD_SETTINGS, WanPipeline, check_previews
from wanpy.request import OPTION_NAMES, GenerationRequest
from wanpy.serve.jobs import FINISHED, Job, JobStore, QueueFull, is_job_id
from wanpy.serve.schemas import FieldError, OpenAIVideoCreate, SdcppVidGen, decode_image, form_value, misplaced_hint

logger = logging.getLogger("wanpy.serve")

__all__ = ["create_app"]

Schema = Literal["openai", "sdcpp"]
MAX_BODY_BYTES = 32 * 2**20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# an option's name in build_request's messages -> the field that set it, per schema
_FIELD_OF = {
    "openai": {"width": "size", "height": "size", "duration": "seconds", "init_image": "input_reference"},
    "sdcpp": {"num_frames": "video_frames", "steps": "sample_params.sample_steps",
              "cfg_scale": "sample_params.guidance.txt_cfg", "flow_shift": "sample_params.flow_shift",
              "sample_method": "sample_params.sample_method", "scheduler": "sample_params.scheduler",
              "high_noise_steps": "high_noise_sample_params.sample_steps",
              "high_noise_cfg_scale": "high_noise_sample_params.guidance.txt_cfg",
              "high_noise_sample_method": "high_noise_sample_params.sample_method",
              "high_noise_scheduler": "high_noise_sample_params.scheduler",
              "vae_tiling": "vae_tiling_params.enabled", "tile_size": "vae_tiling_params.tile_size_x",
              "tile_overlap": "vae_tiling_params.target_overlap", "cache": "cache_mode",
              "control_video": "control_frames", "reference_image": "init_image"},
}


class Refused(Exception):
    """An HTTP error with OpenAI's error body (and FastAPI's ``detail`` list for 422s)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str = "invalid_request",
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers, self.extra = dict(headers or {}), dict(extra or {})

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body: dict[str, Any] = {"error": {"message": self.message, "type": kind, "param": self.param,
                                          "code": self.code, **self.extra}}
        if self.status == 422:
            loc = ["body", *self.param.split(".")] if self.param else ["body"]
            body["detail"] = [{"loc": loc, "msg": self.message, "type": self.code}]
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def create_app(pipeline_or_files: WanPipeline | Mapping[str, Any], *, results_dir: str | os.PathLike[str] | None = None,
               max_queue: int = 8, api_key: str | None = None, ttl_seconds: float = 3600.0,
               quota_bytes: int = 2 * 2**30, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The service for one model set: a loaded ``WanPipeline``, or ``WanPipeline``'s keyword
    arguments (files and load settings), loaded here and closed with the app.

    ``results_dir``: where finished WebMs are kept (default: a new temporary folder); at most
    ``quota_bytes`` of them (the oldest expire first) for ``ttl_seconds`` each. ``max_queue``: jobs
    waiting beyond the running one (more is a 429 with Retry-After). ``api_key``: every API route
    then needs ``Authorization: Bearer KEY`` (the page at ``/`` asks for it)."""
    max_queue = check_int("max_queue", max_queue, minimum=1, maximum=10_000)
    ttl_seconds = check_float("ttl_seconds", ttl_seconds, minimum=0, exclusive_minimum=True, maximum=365 * 86400)
    quota_bytes = check_int("quota_bytes", quota_bytes, minimum=1)
    max_body_bytes = check_int("max_body_bytes", max_body_bytes, minimum=1024)
    if results_dir is not None:  # checked before any weight loads
        check_output_path("results_dir", os.path.join(os.fspath(results_dir), "0" * 32 + ".webm"))
    owned = not isinstance(pipeline_or_files, WanPipeline)
    pipe = WanPipeline(**pipeline_or_files, progress=False) if owned else pipeline_or_files  # type: ignore[arg-type]
    assert isinstance(pipe, WanPipeline)
    own_folder = results_dir is None
    folder = Path(tempfile.mkdtemp(prefix="wanpy-serve-") if results_dir is None else results_dir)
    store = JobStore(pipe, folder, max_queue=max_queue, ttl_seconds=ttl_seconds, quota_bytes=quota_bytes)
    model_id = pipe.family.name

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(store.close)
            if owned:
                pipe.close()
            if own_folder:
                shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(title="wanpy", version=__version__,
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # /openapi.json stays; no page from a CDN
    app.state.store, app.state.pipe = store, pipe
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the router's own 404/405s in the same error body as every other refusal
        return Refused(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else
                       "http_error").response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s: unexpected error", request.method, request.url.path)
        return Refused(500, "internal error (the server's log has the details)", code="internal_error").response()

    @app.middleware("http")
    async def authorize(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if api_key is None and _host_name(host) not in LOOPBACK_HOSTS:
            # without a key only loopback names: a DNS-rebound name reaching 127.0.0.1 is refused
            return Refused(403, f"Host {host!r} is not allowed without an API key", code="bad_host").response()
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{host}":
            # another web page's request (a form posts cross-site without a CORS pre-check)
            return Refused(403, f"cross-origin request from {origin!r} refused", code="cross_origin").response()
        if api_key is not None and request.url.path != "/":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return Refused(401, "a valid API key is needed: Authorization: Bearer KEY",
                               code="invalid_api_key").response()
        return await call_next(request)

    # --- the page -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("wanpy.serve").joinpath("page.html").read_text(encoding="utf-8"))

    # --- OpenAI's Videos API ------------------------------------------------------------------------
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "wanpy"}]}

    @app.post("/v1/videos")
    async def create_video(request: Request) -> JSONResponse:
        body = await _openai_body(request)
        parsed, extra = await run_in_threadpool(_validate, OpenAIVideoCreate, body, "openai")
        assert isinstance(parsed, OpenAIVideoCreate)
        if parsed.model is not None and parsed.model != model_id:
            raise Refused(422, f"model: this server runs {model_id!r}, not {parsed.model!r}", param="model",
                          code="model_not_found")
        job = await _submit(parsed, "openai", extra)
        return JSONResponse(_openai_video(job))

    @app.get("/v1/videos")
    async def list_videos(request: Request) -> dict[str, Any]:
        q = _query(request, {"after", "limit", "order"})
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise Refused(422, f"order must be 'asc' or 'desc', got {order!r}", param="order")
        limit_text = q.get("limit", "20")
        if not re.fullmatch(r"[0-9]{1,3}", limit_text) or not 1 <= int(limit_text) <= 100:
            raise Refused(422, f"limit must be an integer from 1 to 100, got {limit_text!r}", param="limit")
        jobs = sorted(store.jobs(), key=lambda j: j.created, reverse=order == "desc")
        if "after" in q:
            ids = [j.id for j in jobs]
            if q["after"] not in ids:
                raise Refused(422, f"after: no video {q['after']!r}", param="after")
            jobs = jobs[ids.index(q["after"]) + 1:]
        page, more = jobs[:int(limit_text)], len(jobs) > int(limit_text)
        data = [_openai_video(j) for j in page]
        return {"object": "list", "data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    @app.get("/v1/videos/{video_id}")
    async def get_video(video_id: str, request: Request) -> dict[str, Any]:
        _query(request, set())
        return _openai_video(_job(video_id))

    @app.delete("/v1/videos/{video_id}")
    async def delete_video(video_id: str, request: Request) -> dict[str, Any]:
        _query(request, set())
        job = _job(video_id)
        await run_in_threadpool(store.delete, job)
        return {"id": job.id, "object": "video.deleted", "deleted": True}

    @app.post("/v1/videos/{video_id}/cancel")
    async def cancel_video(video_id: str, request: Request) -> dict[str, Any]:
        _query(request, set())
        job = _job(video_id)
        if not store.cancel(job):
            raise Refused(409, f"video {job.id} has already {job.status}", code="already_finished")
        return _openai_video(job)

    @app.get("/v1/videos/{video_id}/content")
    async def video_content(video_id: str, request: Request) -> StreamingResponse:
        variant = _query(request, {"variant"}).get("variant", "video")
        if variant != "video":
            raise Refused(422, f"variant {variant!r}: this server has the video only (no thumbnail or spritesheet)",
                          param="variant")
        job = _job(video_id)
        if job.status == "expired":
            raise Refused(410, f"video {job.id} expired and its file was removed", code="expired")
        path = job.path
        if job.status != "completed" or path is None:
            raise Refused(409, f"video {job.id} is {job.status}, not completed", code="not_ready")
        try:
            handle = path.open("rb")  # held open: an expiry now cannot pull the file from under the response
        except FileNotFoundError:
            raise Refused(410, f"video {job.id} expired and its file was removed", code="expired") from None
        return StreamingResponse(_chunks(handle), media_type="video/webm",
                                 headers={"Content-Disposition": f'attachment; filename="{job.id}.webm"',
                                          "Content-Length": str(os.fstat(handle.fileno()).st_size)})

    @app.get("/v1/videos/{video_id}/preview")
    async def video_preview(video_id: str, request: Request) -> Response:
        _query(request, set())
        job = _job(video_id)
        if job.preview_png is None:
            raise Refused(404, f"video {job.id} has no preview (ask preview='proj', 'vae' or, with a tiny VAE, 'tae')", code="no_preview")
        return Response(job.preview_png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/v1/videos/{video_id}/events")
    async def video_events(video_id: str, request: Request) -> StreamingResponse:
        _query(request, set())
        job = _job(video_id)

        async def events() -> AsyncIterator[str]:
            version, quiet = -1, 0.0
            while True:
                if job.version != version:
                    version, quiet = job.version, 0.0
                    yield f"event: progress\ndata: {json.dumps(_openai_video(job))}\n\n"
                    if job.status in FINISHED:
                        return
                if store.stopping:  # the server is shutting down: do not hold it up
                    return
                elif quiet >= 15.0:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.2)
                quiet += 0.2

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # --- sd.cpp's server schema ---------------------------------------------------------------------
    @app.post("/sdcpp/v1/vid_gen", status_code=202)
    async def vid_gen(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise Refused(415, "send the request as application/json", code="unsupported_media_type")
        parsed, extra = await run_in_threadpool(_validate, SdcppVidGen, await _json(request), "sdcpp")
        job = await _submit(parsed, "sdcpp", extra)
        return JSONResponse({"id": job.id, "kind": "vid_gen", "status": "queued", "created": int(job.created),
                             "poll_url": f"/sdcpp/v1/jobs/{job.id}"}, status_code=202)

    @app.get("/sdcpp/v1/jobs/{job_id}")
    async def sdcpp_job(job_id: str, request: Request) -> dict[str, Any]:
        job = _unexpired(job_id, request)
        return await run_in_threadpool(_sdcpp_job, job)

    @app.post("/sdcpp/v1/jobs/{job_id}/cancel")
    async def sdcpp_cancel(job_id: str, request: Request) -> dict[str, Any]:
        job = _unexpired(job_id, request)
        if not store.cancel(job):
            raise Refused(409, f"job {job.id} has already {job.status}", code="already_finished")
        return await run_in_threadpool(_sdcpp_job, job)

    @app.get("/sdcpp/v1/capabilities")
    async def capabilities() -> dict[str, Any]:
        return _capabilities(pipe, max_queue)

    # --- helpers (closures over this app's store and pipeline) -----------------------------------
    def _job(job_id: str) -> Job:
        job = store.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise Refused(404, f"no video {job_id!r}", code="not_found")
        return job

    def _unexpired(job_id: str, request: Request) -> Job:
        """sd-server's rule: a job whose result expired is 410 Gone."""
        _query(request, set())
        job = _job(job_id)
        if job.status == "expired":
            raise Refused(410, f"job {job.id} expired and its result was removed", code="expired")
        return job

    def _openai_video(job: Job) -> dict[str, Any]:
        r = job.request
        status = {"cancelled": "failed", "expired": "completed"}.get(job.status, job.status)
        error = None if job.error_code is None else {"code": job.error_code, "message": job.error_message}
        expires = None if job.completed is None or job.status not in ("completed", "expired") else \
            int(job.completed + store.ttl_seconds)
        return {"id": job.id, "object": "video", "created_at": int(job.created),
                "completed_at": None if job.completed is None else int(job.completed), "expires_at": expires,
                "model": model_id, "progress": job.progress, "prompt": r.prompt,
                "seconds": f"{float(r.num_frames / r.fps):g}", "size": f"{r.width}x{r.height}", "status": status,
                "error": error, "remixed_from_video_id": None,
                # wanpy's own fields
                "wanpy_status": job.status, "phase": job.phase, "step": job.step, "steps": job.steps,
                "num_frames": r.num_frames, "fps": str(r.fps), "seed": job.seed if job.seed is not None else r.seed,
                "queue_position": store.queue_position(job),
                "content_url": f"/v1/videos/{job.id}/content" if job.status == "completed" else None,
                "preview_url": f"/v1/videos/{job.id}/preview" if job.preview_png is not None else None}

    def _sdcpp_job(job: Job) -> dict[str, Any]:
        status = {"in_progress": "generating"}.get(job.status, job.status)
        result = None
        path = job.path
        if job.status == "completed" and path is not None:
            r = job.request
            fps: int | str = int(r.fps) if r.fps.denominator == 1 else str(r.fps)
            try:
                encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            except FileNotFoundError:
                raise Refused(410, f"job {job.id} expired and its result was removed", code="expired") from None
            result = {"output_format": "webm", "mime_type": "video/webm", "fps": fps, "frame_count": r.num_frames,
                      "b64_json": encoded,
                      "url": f"/v1/videos/{job.id}/content", "seed": job.seed}
        error = None if job.error_code is None else {"code": job.error_code, "message": job.error_message}
        return {"id": job.id, "kind": "vid_gen", "status": status, "created": int(job.created),
                "started": None if job.started is None else int(job.started),
                "completed": None if job.completed is None else int(job.completed),
                "queue_position": store.queue_position(job), "result": result, "error": error,
                "progress": {"phase": job.phase, "step": job.step, "steps": job.steps, "percent": job.progress}}

    async def _submit(parsed: OpenAIVideoCreate | SdcppVidGen, schema: Schema, extra: dict[str, Any]) -> Job:
        options: dict[str, Any] = {}

        def build() -> GenerationRequest:  # decodes images: off the event loop
            options.update(parsed.to_options(), **extra)
            if isinstance(parsed, SdcppVidGen) and pipe.family.vace and "init_image" in options:
                # sd-server hands init_image to sd.cpp, whose VACE path takes it as the reference image
                options["reference_image"] = options.pop("init_image")
            generation = pipe.request(parsed.prompt, **options)
            check_previews(generation, callback=True, tiny_vae=pipe.files["tiny_vae"])  # the job has one
            return generation

        try:
            generation = await run_in_threadpool(build)
        except FieldError as exc:
            raise Refused(422, str(exc), param=exc.field, code="invalid_value") from None
        except (ValueError, TypeError) as exc:
            field = _field_in(str(exc), schema, options)
            message = str(exc) if field is None or str(exc).startswith(field) else f"{field}: {exc}"
            raise Refused(422, message, param=field, code="invalid_value") from None
        try:
            store.check_room()  # a full queue is refused before paying for a pre-flight
            if generation.fit == "auto":
                choice = await run_in_threadpool(pipe.choose_fit, generation)
                reload = [k for k in choice.changed if k in LOAD_SETTINGS]
                if reload:  # one request must not reload the weights every later job runs with
                    raise Refused(422, f"fit: the cheapest settings that fit change {', '.join(reload)}, fixed "
                                       f"when this server loaded; start it with {', '.join(reload)} instead",
                                  param="fit", code="does_not_fit")
            else:
                await run_in_threadpool(pipe.check_fits, generation)
        except QueueFull as exc:
            raise Refused(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None
        except AllocationTooLargeError as exc:
            raise Refused(422, str(exc), code="does_not_fit", extra={
                "required_bytes": exc.required, "limit_bytes": exc.limit, "suggestions": list(exc.suggestions),
                "allocation": str(exc.allocation) if exc.allocation is not None else None}) from None
        try:
            return store.submit(generation)
        except QueueFull as exc:
            raise Refused(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None

    return app


# --- parsing ------------------------------------------------------------------------------------
async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise Refused(422, "the request body is empty: send a JSON object", code="empty_body")
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except Refused:
        raise
    except (ValueError, RecursionError) as exc:  # not JSON, numbers past Python's digit limit, deep nesting
        raise Refused(422, f"the body is not JSON wanpy reads: {exc}", code="invalid_json") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Refused(422, f"{key}: given more than once", param=key, code="duplicate_field")
        out[key] = value
    return out


async def _openai_body(request: Request) -> Any:
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return await _json(request)
    if not kind.startswith("multipart/form-data"):
        raise Refused(415, "send application/json or multipart/form-data", code="unsupported_media_type")
    body: dict[str, Any] = {}
    async with request.form(max_files=1, max_fields=64) as form:
        for name, value in form.multi_items():
            if name in body:
                raise Refused(422, f"{name}: given more than once", param=name, code="duplicate_field")
            if isinstance(value, str):
                try:
                    body[name] = form_value(name, value)
                except FieldError as exc:
                    raise Refused(422, str(exc), param=exc.field, code="invalid_value") from None
            elif name == "input_reference":
                body[name] = await value.read()
            else:
                raise Refused(422, f"{name}: unexpected file (only input_reference takes one)", param=name,
                              code="unknown_field")
    return body


def _validate(model: type[OpenAIVideoCreate] | type[SdcppVidGen], body: Any,
              schema: Schema) -> tuple[OpenAIVideoCreate | SdcppVidGen, dict[str, Any]]:
    """The parsed body, and the options it holds outside the schema (OpenAI's input_reference)."""
    image = None
    if schema == "openai" and isinstance(body, dict) and "input_reference" in body:
        body = dict(body)
        raw = body.pop("input_reference")
        if not isinstance(raw, (bytes, str)):
            raise Refused(422, "input_reference: an image file (multipart) or base64", param="input_reference")
        try:
            image = decode_image("input_reference", raw)
        except FieldError as exc:
            raise Refused(422, str(exc), param=exc.field, code="invalid_value") from None
    if not isinstance(body, dict):
        raise Refused(422, f"the body must be a JSON object, got {type(body).__name__}", code="invalid_type")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc) or "body"
        if first["type"] == "extra_forbidden":
            message = f"{where}: unknown field{misplaced_hint(schema, loc)}"
            raise Refused(422, message, param=where, code="unknown_field") from None
        raise Refused(422, f"{where}: {first['msg']}", param=where, code=first["type"]) from None
    return parsed, {} if image is None else {"init_image": image}


def _host_name(host: str) -> str:
    """A Host header without its port ("[::1]:8000" -> "[::1]")."""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host


def _query(request: Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, none unknown and none twice."""
    out: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise Refused(422, f"unknown query parameter {name!r}" + (f" (allowed: {', '.join(sorted(allowed))})"
                                                                     if allowed else ""), param=name,
                          code="unknown_field")
        if name in out:
            raise Refused(422, f"{name}: given more than once", param=name, code="duplicate_field")
        out[name] = value
    return out


def _field_in(message: str, schema: Schema, options: Mapping[str, Any]) -> str | None:
    """The request field a ``build_request`` message is about: the option it starts with, else the
    first option given that it names."""
    word = message.split(" ", 1)[0].split("=", 1)[0].rstrip(":,")
    named = word if word in OPTION_NAMES or word == "prompt" else next(
        (o for o in sorted(options, key=len, reverse=True) if re.search(rf"\b{o}\b", message)), None)
    return None if named is None else _FIELD_OF[schema].get(named, named)


def _capabilities(pipe: WanPipeline, max_queue: int) -> dict[str, Any]:
    fam, d = pipe.family, pipe.family.defaults
    defaults: dict[str, Any] = {
        "prompt": "", "negative_prompt": "", "width": d.width, "height": d.height, "seed": -1,
        "video_frames": d.num_frames, "fps": d.fps,
        "sample_params": {"scheduler": "discrete", "sample_method": "euler", "sample_steps": d.steps,
                          "flow_shift": d.flow_shift, "guidance": {"txt_cfg": d.cfg_scale}},
        "vae_tiling_params": {"enabled": pipe.vae_tiling, "tile_size_x": 0, "tile_size_y": 0,
                              "target_overlap": 0.5, "rel_size_x": 0.0, "rel_size_y": 0.0},
        "cache_mode": "disabled", "cache_option": "", "output_format": "webm"}
    if fam.two_experts:
        defaults["moe_boundary"] = d.moe_boundary
        defaults["high_noise_sample_params"] = {"scheduler": "discrete", "sample_method": "euler",
                                                "sample_steps": -1, "guidance": {"txt_cfg": d.high_noise_cfg_scale}}
    features = {"init_image": fam.images != "none", "end_image": fam.images == "init_end", "control_frames": fam.vace,
                "high_noise_sample_params": fam.two_experts, "lora": False, "vae_tiling": True, "cache": True,
                "cancel_queued": True, "cancel_generating": True}
    name = Path(pipe.files["diffusion_model"] or "").name
    return {"model": {"name": fam.name, "stem": Path(name).stem, "path": name},
            "current_mode": "vid_gen", "supported_modes": ["vid_gen"],
            "defaults": defaults, "output_formats": ["webm"], "features": features,
            "defaults_by_mode": {"vid_gen": defaults}, "output_formats_by_mode": {"vid_gen": ["webm"]},
            "features_by_mode": {"vid_gen": features},
            "samplers": list(_core.sample_methods()), "schedulers": list(_core.schedulers()),
            "loras": [], "upscalers": [],
            "limits": {"min_width": fam.size_multiple, "max_width": 16384, "min_height": fam.size_multiple,
                       "max_height": 16384, "max_batch_count": 1, "max_queue_size": max_queue}}


async def _chunks(handle: Any, size: int = 2**20) -> AsyncIterator[bytes]:
    try:
        while chunk := await run_in_threadpool(handle.read, size):
            yield chunk
    finally:
        handle.close()


class _BodyLimit:
    """Refuses a request body past ``max_bytes`` (413), declared or streamed, before a route reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await Refused(413, f"the body is larger than {self.max_bytes} bytes", code="too_large").response()(
                scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise Refused(413, f"the body is larger than {self.max_bytes} bytes", code="too_large")
            return message

        await self.app(scope, counted, send)

