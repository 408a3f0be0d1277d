"""The two webhooks: machine endpoints, authenticated by their signature (sync/hooks.py), not by a login or a
CSRF token. Thin: everything is decided and recorded by sync.hooks.receive."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .. import hooks
from ..choices import HookDirection


def _receive(direction: str, request: HttpRequest, slug: str) -> JsonResponse:
    length = request.META.get("CONTENT_LENGTH", "")
    answer = hooks.receive(
        direction, slug, request.headers, request.read, int(length) if length.isdigit() else None
    )
    return JsonResponse(answer.body, status=answer.status)


@login_not_required
@csrf_exempt
@require_POST
def source_hook(request: HttpRequest, slug: str) -> JsonResponse:
    return _receive(HookDirection.SOURCE, request, slug)


@login_not_required
@csrf_exempt
@require_POST
def moodle_hook(request: HttpRequest, slug: str) -> JsonResponse:
    return _receive(HookDirection.MOODLE, request, slug)
