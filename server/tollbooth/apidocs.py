"""`/api/openapi.json` and the interactive reference `/api/docs` (Swagger UI), served by the
webhook sidecar's Starlette app; Envoy routes both paths there.

The document is gateway/openapi.json, generated from the contract by `make proto`. Swagger UI
comes from the pinned npm package swagger-ui-dist that `make setup` installs (`npm ci`), never
from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tollbooth.config import REPO_ROOT

OPENAPI = REPO_ROOT / "gateway" / "openapi.json"
SWAGGER_UI = REPO_ROOT / "node_modules" / "swagger-ui-dist"
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tollbooth API reference</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" href="/api/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api/docs/assets/init.js"></script>
</body>
</html>
"""

# The page's own set-up, served as an asset so that the policy allows no inline script.
# validatorUrl null: Swagger UI would otherwise fetch a badge from validator.swagger.io.
INIT = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: true,
  validatorUrl: null,
});
"""

# The page keeps what "Authorize" was given (persistAuthorization, in this origin's storage):
# no other site may frame it, and it runs scripts from this origin only. Swagger UI sets
# inline styles and uses data: images, hence those two allowances.
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def _missing(what: str, path: Path) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "reason": "SERVICE_UNAVAILABLE",
                "message": f"{what} is missing ({path.name}); run make setup / make proto",
            }
        },
        status_code=503,
    )


async def openapi(request: Request) -> Response:
    if not OPENAPI.exists():
        return _missing("the OpenAPI document", OPENAPI)
    return FileResponse(OPENAPI, media_type="application/json", headers=NOSNIFF)


async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "init.js":
        return Response(INIT, media_type="text/javascript", headers=NOSNIFF)
    if name not in ASSETS:
        return JSONResponse(
            {"error": {"reason": "ROUTE_NOT_FOUND", "message": "no such path"}}, status_code=404
        )
    path = SWAGGER_UI / name
    if not path.exists():
        return _missing("Swagger UI", SWAGGER_UI)
    return FileResponse(
        path, media_type=ASSETS[name], headers={"cache-control": "max-age=3600", **NOSNIFF}
    )


def routes() -> list[Route]:
    return [
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/docs", docs, methods=["GET"]),
        Route("/api/docs/assets/{name}", asset, methods=["GET"]),
    ]
